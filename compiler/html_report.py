"""The compile report as one self-contained HTML page (`ember report`, `compiled.report.to_html`).

Inline CSS and SVG only, no script and no network: the compile summary; the guards and
recompiles with their source lines; then for each compiled program the graph at every stage
of the pipeline (switched with radio buttons and CSS; Graphviz's `dot` draws the SVGs, and
without it each stage shows its text), the kernels with the model lines they came from and
their measured times, the memory chart, and the compile time of every stage.

Kernel times come from a build of the program with per-kernel timers (the CPU target's
instrumented build, as EMBER_DEBUG=2), called a few times on zero-filled inputs in a cache of
its own; programs that talk to other processes (collectives) are not run.
"""
import html
import os
import tempfile
from collections import defaultdict

import numpy as np

from ember.ir.symbols import HINT, evaluate

from ember.ir.provenance import describe_sources
from ember.ops import PRIMITIVES

CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }
h3 { font-size: 15px; margin-top: 20px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
table { border-collapse: collapse; font-size: 12px; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f0f0f0; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.stages input { display: none; }
.stages label { display: inline-block; padding: 4px 10px; border: 1px solid #aaa; border-radius: 4px 4px 0 0;
                margin-right: 2px; cursor: pointer; background: #f4f4f4; font-size: 13px; }
.stages .stage { display: none; border: 1px solid #aaa; padding: 8px; overflow: auto; max-height: 900px; }
.stages svg { max-width: none; }
"""


def write_report(path, title, summary, guards, recompiles, programs):
    """Write the page to `path` atomically. `guards`: [(source, code, how, outcomes)];
    `recompiles`: [reason]; `programs`: traced graphs (segments) to show."""
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}{_stage_css(len(programs))}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", "<h2>Compile summary</h2>", f"<pre>{html.escape(summary)}</pre>",
             "<h2>Guards</h2>"]
    if guards:
        parts.append("<table><tr><th>source line</th><th>code</th><th>how</th><th>outcomes seen</th></tr>")
        for source, code, how, outcomes in guards:
            parts.append(f"<tr><td>{html.escape(source or '?')}</td><td><code>{html.escape(code or '?')}</code></td>"
                         f"<td>{html.escape(how)}</td><td>{html.escape(outcomes)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No guards: no tensor value flowed into Python.</p>")
    parts.append("<h2>Recompiles</h2>")
    parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in recompiles) + "</ul>" if recompiles
                 else "<p>None.</p>")
    for number, graph in enumerate(programs):
        parts.extend(_program_section(number, graph))
    parts.append("</body></html>")
    text = "\n".join(parts)
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".report", suffix=".html")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # (mkstemp made it private)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _stage_css(programs):
    from ember.passes.pipeline import stage_names
    rules = []
    for p in range(programs):
        for s, stage in enumerate(stage_names()):
            rules.append(f"#p{p}s{s}:checked ~ .stage.s{s} {{ display: block; }} "
                         f"#p{p}s{s}:checked + label {{ background: #dde8ff; font-weight: bold; }}")
    return "\n".join(rules)


def _program_section(number, graph):
    from ember.passes.pipeline import run_passes, stage_names
    from .stage_rendering import StageFormatError, dot_to_svg, stage_dot
    from .stage_timer import StageTimer
    timer = StageTimer()
    stages = run_passes(graph, timer=timer, check=False, dump_dir="")
    parts = [f"<h2 id='program{number}'>Program {html.escape(graph.name)}</h2>",
             f"<h3>The graph at each stage</h3><div class='stages' data-program='{number}'>"]
    names = [s for s in stage_names() if s in stages.graphs]
    for s, stage in enumerate(names):
        checked = " checked" if stage == "fused" else ""
        parts.append(f"<input type='radio' name='p{number}' id='p{number}s{s}'{checked}>"
                     f"<label for='p{number}s{s}'>{stage}</label>")
    for s, stage in enumerate(names):
        current = stages.graphs[stage]
        fusion = stages.fusion if stage in ("fused", "planned") else None
        try:
            svg = _inline(dot_to_svg(stage_dot(current, fusion)))
            body = f"<div class='graph-svg'>{svg}</div>"
        except StageFormatError as error:
            body = f"<p>{html.escape(str(error))}</p><pre>{html.escape(stages.text(stage))}</pre>"
        parts.append(f"<div class='stage s{s}' data-stage='{stage}'>{body}</div>")
    parts.append("</div>")
    kernels, seconds = _compile_and_time(graph)
    parts.append("<h3>Kernels</h3><table><tr><th>#</th><th>kernel</th><th>kind</th><th>model lines</th>"
                 "<th>time (us)</th></tr>")
    for k, (name, kind, nodes, lowered_graph, micros) in enumerate(kernels):
        time_text = "" if micros is None else f"{micros:.1f}"
        parts.append(f"<tr class='kernel'><td class='num'>{k}</td><td>{html.escape(name)}</td><td>{kind}</td>"
                     f"<td>{html.escape(describe_sources(lowered_graph, nodes, limit=4))}</td>"
                     f"<td class='num'>{time_text}</td></tr>")
    parts.append("</table>")
    if kernels and kernels[0][4] is None:
        parts.append("<p>(Not timed: the program runs collectives with other processes.)</p>")
    if stages.plan is not None:
        from ember.passes.memory_chart import plan_to_svg
        parts.append("<h3>Memory plan</h3>")
        parts.append(f"<div class='memory-chart'>{plan_to_svg(stages.plan, stages.graphs['planned'])}</div>")
    parts.append("<h3>Compile time per stage</h3><table><tr><th>stage</th><th>ms</th></tr>")
    for stage, value in {**timer.seconds, **seconds}.items():
        parts.append(f"<tr><td>{html.escape(stage)}</td><td class='num'>{value * 1e3:.2f}</td></tr>")
    parts.append("</table>")
    return parts


def _inline(svg):
    """Graphviz's SVG without its XML prologue, so it can sit inside HTML."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def _compile_and_time(graph, calls=5):
    """[(kernel name, kind, nodes, graph, microseconds or None)] from an instrumented build (a
    cache of its own) called on zero inputs (the fastest of `calls`), and the compile time of
    its stages (seconds)."""
    from .cpu.target import CpuTarget
    from .driver import Driver
    with tempfile.TemporaryDirectory() as cache:
        driver = Driver(CpuTarget(instrument=True), "llvm", cache_dir=cache, debug=0)
        runner = driver.compile(graph)
        lowered = runner.prepared
        micros = [None] * len(lowered.kernels)
        if not any(PRIMITIVES[n.op].effects for n in graph.nodes() if n.op in PRIMITIVES):
            runner.print_timings = False
            # (a dynamic program is timed with every size symbol at HINT)
            shape = lambda i: evaluate(tuple(graph.node(i).shape), defaultdict(lambda: HINT))  # noqa: E731
            inputs = {i: np.zeros(shape(i), graph.node(i).dtype) for i in graph.inputs}
            params = {name: np.zeros(shape(i), graph.node(i).dtype) for name, i in graph.params.items()}
            best = None
            for _ in range(calls):
                try:
                    runner(inputs, params)
                except Exception:  # (zeros may not be valid inputs: an index check) not timed then
                    break
                best = runner.kernel_seconds if best is None else np.minimum(best, runner.kernel_seconds)
            if best is not None:
                micros = [float(t) * 1e6 for t in best]
        kernels = [(k.name, k.kind, k.nodes, lowered.graph, t) for k, t in zip(lowered.kernels, micros)]
        return kernels, {f"compile: {stage}": seconds for stage, seconds in driver.stats.stage_seconds.items()
                         if stage not in ("simplify", "schedule", "fuse", "plan")}
