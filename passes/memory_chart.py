"""The memory plan as a picture: an SVG chart, written directly (no Graphviz needed).

Time (the kernel steps of the schedule) runs left to right, the arena offset bottom to top;
each planned buffer is one rectangle from the step that produces it to the last step that
reads it, at its offset and of its size, labelled with its producer (node and name; the
tooltip adds bytes, steps and the model line). Dashed lines mark the arena's size and the
lower bound (the most bytes live at any one step), so the gap between them is the planner's
waste. `ember dump --stage planned --format svg`, EMBER_DUMP and the HTML report draw it.
"""
from html import escape

WIDTH, HEIGHT, MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 960, 520, 90, 50, 40
COLORS = ("#8ecae6", "#ffb703", "#90be6d", "#f28482", "#b8c0ff", "#f6bd60", "#84a59d", "#cdb4db")


def plan_to_svg(plan, graph):
    """The chart of `plan` (a MemoryPlan) for the planned `graph`, as SVG text."""
    steps = max(plan.steps, max((b.last_step + 1 for b in plan.buffers.values()), default=1), 1)
    top = max(plan.arena_bytes, plan.lower_bound_bytes, 1)
    plot_w, plot_h = WIDTH - MARGIN_LEFT - 20, HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(step):
        return MARGIN_LEFT + step * plot_w / steps

    def y(offset):
        return MARGIN_TOP + plot_h - offset * plot_h / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="memory-plan" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
             f'<title>memory plan of {escape(plan.graph_name)}</title>',
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{MARGIN_LEFT}" y="20" font-size="14">memory plan of {escape(plan.graph_name)}: arena '
             f'{plan.arena_bytes} bytes, lower bound {plan.lower_bound_bytes} bytes, naive {plan.naive_bytes} '
             f'bytes, {len(plan.buffers)} buffers</text>']
    for k, (node_id, buffer) in enumerate(sorted(plan.buffers.items(), key=lambda kv: (kv[1].offset, kv[0]))):
        node = graph.node(node_id) if node_id in graph else None
        name = f"%{node_id} {node.name}" if node is not None else f"%{node_id}"
        left, right = x(buffer.first_step), x(buffer.last_step + 1)
        low, high = y(buffer.offset), y(buffer.offset + buffer.nbytes)
        tip = (f"{name}: {buffer.nbytes} bytes at offset {buffer.offset}, steps {buffer.first_step}.."
               f"{buffer.last_step}" + (f", {node.source}" if node is not None and node.source else ""))
        parts.append(f'<rect class="buffer" data-node="{node_id}" x="{left:.1f}" y="{high:.1f}" '
                     f'width="{max(right - left, 1):.1f}" height="{max(low - high, 1):.1f}" '
                     f'fill="{COLORS[k % len(COLORS)]}" stroke="#333" stroke-width="0.5">'
                     f'<title>{escape(tip)}</title></rect>')
        if right - left > 6 * len(name) * 0.6 and low - high > 12:
            parts.append(f'<text x="{left + 3:.1f}" y="{high + 12:.1f}" pointer-events="none">{escape(name)}</text>')
    for value, label, color, anchor, at in ((plan.arena_bytes, "arena", "#333", "end", WIDTH - 22),
                                            (plan.lower_bound_bytes, "lower bound", "#c00", "start", MARGIN_LEFT + 4)):
        parts.append(f'<line class="{label.replace(" ", "-")}" x1="{MARGIN_LEFT}" x2="{WIDTH - 20}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="{color}" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{at}" y="{y(value) - 4:.1f}" text-anchor="{anchor}" fill="{color}">{label} '
                     f'{value} bytes</text>')
    base = MARGIN_TOP + plot_h
    parts.append(f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - 20}" y1="{base}" y2="{base}" stroke="black"/>')
    parts.append(f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" y2="{base}" stroke="black"/>')
    for step in range(0, steps + 1, max(1, steps // 12)):
        parts.append(f'<text x="{x(step):.1f}" y="{base + 15}" text-anchor="middle">{step}</text>')
    parts.append(f'<text x="{MARGIN_LEFT + plot_w / 2:.0f}" y="{HEIGHT - 12}" text-anchor="middle">kernel step '
                 f'(time)</text>')
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y(top * fraction) + 4:.1f}" text-anchor="end">'
                     f'{int(top * fraction)}</text>')
    parts.append(f'<text x="16" y="{MARGIN_TOP + plot_h / 2:.0f}" transform="rotate(-90 16 '
                 f'{MARGIN_TOP + plot_h / 2:.0f})" text-anchor="middle">arena offset (bytes)</text>')
    parts.append("</svg>")
    return "\n".join(parts)
