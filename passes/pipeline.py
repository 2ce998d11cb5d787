"""The pass pipeline: traced -> autodiff -> simplified -> fused -> planned, with dumps.

`run_passes(graph)` applies the passes in order and returns every stage. With
EMBER_DUMP=DIR (or `dump_dir=`) each stage is written as text and DOT, plus a unified diff
against the previous stage, as DIR/<graph>/<n>_<stage>.{txt,dot,diff}. `render_stage`
gives the text one stage prints in `ember dump --stage`.
"""
import difflib
import os
import re
from dataclasses import dataclass, field

from ember import config
from ember.ir.text import format_graph

STAGES = ("traced", "autodiff", "simplified", "fused", "planned")


@dataclass
class Stages:
    """Each stage's graph, plus the fusion and memory plan of the last two."""

    graphs: dict = field(default_factory=dict)  # stage name -> Graph
    fusion: object = None
    plan: object = None

    def text(self, stage):
        graph = self.graphs[stage]
        if stage == "fused":
            return fused_text(graph, self.fusion)
        if stage == "planned":
            return planned_text(graph, self.fusion, self.plan)
        return format_graph(graph)


def with_gradients(graph):
    """The autodiff stage of a forward graph: the joint graph with the gradients of its
    floating-point outputs (seeded with ones) with respect to every param. A graph that
    already differentiates itself (a traced training step) is returned as is."""
    from .autodiff import gradients
    if any(n.name.startswith("grad.") for n in graph.nodes()):
        return graph
    joint = graph.copy(graph.name)
    floats = [o for o in joint.outputs if joint.spec(o).dtype.is_floating_point]
    wrt = [p for p in joint.params.values() if joint.spec(p).dtype.is_floating_point]
    if not floats or not wrt:
        return joint
    grads = gradients(joint, floats, wrt)
    joint.outputs = list(joint.outputs) + [g for g in grads.values() if g is not None]
    return joint


def run_passes(graph, differentiate=False, dump_dir=None, stop_after="planned"):
    """Run the pipeline on `graph` (left untouched); returns `Stages`."""
    from .simplify import simplify
    stages = Stages()
    stages.graphs["traced"] = graph
    current = with_gradients(graph) if differentiate else graph
    stages.graphs["autodiff"] = current
    if stop_after not in ("traced", "autodiff"):
        current = simplify(current)
        stages.graphs["simplified"] = current
    if stop_after in ("fused", "planned"):
        from .fusion import fuse
        stages.fusion = fuse(current)
        stages.graphs["fused"] = current
    if stop_after == "planned":
        from .memory import plan_memory
        stages.plan = plan_memory(current, stages.fusion)
        stages.plan.check()
        stages.graphs["planned"] = current
    dump_dir = dump_dir if dump_dir is not None else config.DUMP_DIR
    if dump_dir:
        write_dumps(stages, dump_dir)
    return stages


def fused_text(graph, fusion):
    def annotate(node):
        group = fusion.group_of.get(node.id)
        return None if group is None else f"g{group} {fusion.groups[group].name}"
    return format_graph(graph, annotate) + f"\nkernels: {fusion.kernel_count}"


def planned_text(graph, fusion, plan):
    def annotate(node):
        notes = []
        group = fusion.group_of.get(node.id)
        if group is not None:
            notes.append(f"g{group}")
        buffer = plan.buffers.get(node.id)
        if buffer is not None:
            notes.append(f"@{buffer.offset}+{buffer.nbytes}")
        if node.id in plan.in_place:
            notes.append(f"in place of %{plan.in_place[node.id]}")
        return " ".join(notes) or None
    return format_graph(graph, annotate) + "\n" + plan.describe()


def write_dumps(stages, dump_dir):
    """Text, DOT and a diff against the previous stage for every stage, written atomically."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", next(iter(stages.graphs.values())).name) or "graph"
    folder = os.path.join(dump_dir, name)
    os.makedirs(folder, exist_ok=True)
    previous = None
    for index, stage in enumerate(s for s in STAGES if s in stages.graphs):
        text = stages.text(stage)
        graph = stages.graphs[stage]
        group_of = None
        if stage in ("fused", "planned") and stages.fusion is not None:
            fusion = stages.fusion
            group_of = lambda n: ((fusion.group_of[n], fusion.groups[fusion.group_of[n]].name)  # noqa: E731
                                  if n in fusion.group_of else None)
        from ember.ir.dot import graph_to_dot
        stem = os.path.join(folder, f"{index}_{stage}")
        _write_atomically(stem + ".txt", text)
        _write_atomically(stem + ".dot", graph_to_dot(graph, group_of))
        if previous is not None:
            diff = difflib.unified_diff(previous[1].splitlines(), text.splitlines(), previous[0], stage, lineterm="")
            _write_atomically(stem + ".diff", "\n".join(diff))
        previous = (stage, text)


def _write_atomically(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)


def render_stage(graph, stage, differentiate=False):
    """The text `ember dump --stage STAGE` prints."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    stages = run_passes(graph, differentiate=differentiate, dump_dir="", stop_after=stage)
    return stages.text(stage)
