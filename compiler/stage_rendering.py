"""Every stage of the pipeline in every format: what `ember dump --stage S --format F`, EMBER_DUMP
and the HTML report show.

Graph stages (traced, autodiff, simplified, scheduled, fused, planned) come as text, JSON (the
graph's own, which `Graph.from_json` reads back, plus its stage), DOT, GraphML and SVG. Fused and
planned JSON add the kernels (name, kind, nodes, model lines) and
the memory plan (each buffer's offset, size and steps); fused and planned DOT draw a training
step's kernels as boxes inside forward/backward/update clusters (ember/ir/dot.py), planned DOT
labels nodes with their arena offsets; planned SVG is the memory chart (passes/memory_chart.py,
no Graphviz needed); other SVGs are Graphviz's rendering of the DOT. The code stages, kernels
(loop nests with model lines), llvm and asm (or, for the GPU target, ptx and sass-check:
ptxas's resource usage per kernel), come as text and JSON (and kernels also as DOT/SVG:
the kernel graph); asking llvm or asm for a picture is a StageFormatError.
"""
import json
import shutil
import subprocess

FORMATS = ("text", "json", "dot", "graphml", "svg")
CODE_STAGES = ("kernels", "llvm", "asm", "ptx", "sass-check")  # every backend's; code_stages_of: one's


def code_stages_of(backend):
    """The code stages `backend` ("llvm", "ptx") prints: kernels, then its target's."""
    from .backends import get_backend
    return ("kernels",) + tuple(get_backend(backend).target.code_stages)


class StageFormatError(ValueError):
    """A stage that has no such format, or a missing tool (Graphviz): the message says what to do."""


def dot_to_svg(dot_text):
    dot = shutil.which("dot")
    if dot is None:
        raise StageFormatError("--format svg needs Graphviz's `dot` program, which is not installed. Install it "
                               "(apt-get install graphviz, brew install graphviz, conda install graphviz) or use "
                               "--format dot and render it elsewhere; the memory chart (--stage planned --format "
                               "svg) needs nothing")
    done = subprocess.run([dot, "-Tsvg"], input=dot_text, capture_output=True, text=True)
    if done.returncode != 0:
        raise StageFormatError(f"Graphviz's dot failed: {done.stderr.strip()}")
    return done.stdout


def render(graph, stage, fmt, differentiate=False, backend="llvm"):
    """`graph` (as traced) at `stage` in `fmt` (see the module docstring)."""
    from ember.passes.pipeline import run_passes, stage_names
    if fmt not in FORMATS:
        raise StageFormatError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if stage in CODE_STAGES:
        return _render_code(graph, stage, fmt, backend)
    if stage not in stage_names():
        raise StageFormatError(f"unknown stage {stage!r}; stages: {', '.join(stage_names() + CODE_STAGES)}")
    stages = run_passes(graph, differentiate=differentiate, stop_after=stage)
    current = stages.graphs[stage]
    fusion = stages.fusion if stage in ("fused", "planned") else None
    plan = stages.plan if stage == "planned" else None
    if fmt == "text":
        return stages.text(stage)
    if fmt == "json":
        data = json.loads(current.to_json())  # (the graph's own JSON, which Graph.from_json reads back)
        data["stage"] = stage
        if fusion is not None:
            data["kernels"] = kernels_data(current, fusion)
        if plan is not None:
            data["memory_plan"] = plan_data(plan)
        return json.dumps(data, indent=1)
    if fmt == "graphml":
        return current.to_graphml()
    if fmt == "svg" and plan is not None:
        from ember.passes.memory_chart import plan_to_svg
        return plan_to_svg(plan, current)
    dot = stage_dot(current, fusion, plan)
    return dot if fmt == "dot" else dot_to_svg(dot)


def stage_dot(graph, fusion=None, plan=None):
    from ember.ir.dot import graph_to_dot
    group_of = None
    if fusion is not None:
        def group_of(node_id):
            group = fusion.group_of.get(node_id)
            return None if group is None else (group, fusion.groups[group].name)
    annotate = None
    if plan is not None:
        def annotate(node):
            buffer = plan.buffers.get(node.id)
            return None if buffer is None else f"@{buffer.offset}+{buffer.nbytes}"
    return graph_to_dot(graph, group_of, kernels=fusion, annotate=annotate)


def kernels_data(graph, fusion):
    from ember.ir.provenance import describe_sources
    return [{"id": g.id, "name": g.name, "kind": g.kind, "nodes": list(g.nodes),
             "model_lines": describe_sources(graph, g.nodes, limit=6)} for g in fusion.groups]


def plan_data(plan):
    return {"arena_bytes": plan.arena_bytes, "lower_bound_bytes": plan.lower_bound_bytes,
            "naive_bytes": plan.naive_bytes, "steps": plan.steps,
            "buffers": [{"node": node, "offset": b.offset, "bytes": b.nbytes, "first_step": b.first_step,
                         "last_step": b.last_step} for node, b in sorted(plan.buffers.items())]}


def _render_code(graph, stage, fmt, backend):
    from .backends import get_backend
    driver = get_backend(backend)
    if stage == "kernels":
        lowered = driver.prepare(graph)
        if fmt == "text":
            from .driver import kernels_text
            return kernels_text(lowered)
        if fmt == "json":
            from ember.ir.provenance import describe_sources
            return json.dumps({"stage": "kernels", "arena_bytes": lowered.arena_bytes,
                               "kernels": [{"name": k.name, "kind": k.kind, "nodes": list(k.nodes),
                                            "model_lines": describe_sources(lowered.graph, k.nodes, limit=6),
                                            "loop_nest": k.describe()} for k in lowered.kernels]}, indent=1)
        if fmt == "graphml":
            return lowered.graph.to_graphml()
        dot = stage_dot(lowered.graph, lowered.fusion)
        return dot if fmt == "dot" else dot_to_svg(dot)
    text = driver.render(graph, stage)
    if fmt == "text":
        return text
    if fmt == "json":
        return json.dumps({"stage": stage, "backend": backend, "text": text}, indent=1)
    what = {"llvm": "LLVM IR", "ptx": "PTX", "sass-check": "ptxas's report"}.get(stage, "assembly")
    raise StageFormatError(f"--stage {stage} is code ({what}): it comes "
                           f"as --format text or json; for a picture of the program use --stage kernels or planned")
