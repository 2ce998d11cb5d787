"""The pass manager: the ordered list of passes (traced -> autodiff -> simplified -> scheduled ->
fused -> planned) that the compile driver, `ember dump --stage`, EMBER_DEBUG=3 and EMBER_DUMP all use.

Each `Pass` has a name, the stage its output is called, a run function returning
`(graph, result)` (fuse returns its Fusion, plan_memory its MemoryPlan: results, not graph
attributes) and a describe function giving the stage's text. `run_passes(graph)` applies them
in order (the graph passed in is left as it was) and returns `Stages`: every stage's graph
and every pass's result. Adding a pass is one entry in PASSES. With EMBER_DUMP=DIR (or
`dump_dir=`) each stage is written as text and DOT, plus a unified diff against the previous
stage, as DIR/<graph>/<n>_<stage>.{txt,dot,diff}; the compile driver adds the kernels, the memory
plan and the generated code there.
"""
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Callable

from ember import config
from ember.ir.text import format_graph


@dataclass(frozen=True)
class Pass:
    """One pass: `run(graph, stages) -> (graph, result)` reads earlier results from `stages`
    (a `Stages`); `describe(graph, stages) -> str` is the text of its stage; `applies(options)`
    says whether it runs for these run_passes options (a pass that does not apply leaves the
    graph as it is); `check(result)` verifies its result where run_passes is asked to."""

    name: str
    stage: str
    run: Callable
    describe: Callable = None
    applies: Callable = None
    check: Callable = None

    def text(self, graph, stages):
        return self.describe(graph, stages) if self.describe else format_graph(graph)


@dataclass
class Stages:
    """Each stage's graph (stage name -> Graph), each pass's result (pass name -> result) and
    the passes that ran, in order."""

    graphs: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    ran: list = field(default_factory=list)
    dump_folder: str = None  # where EMBER_DUMP wrote the stages (the driver adds the code there)

    @property
    def fusion(self):
        return self.results.get("fuse")

    @property
    def plan(self):
        return self.results.get("plan")

    def text(self, stage):
        graph = self.graphs[stage]
        for each in PASSES:
            if each.stage == stage:
                return each.text(graph, self)
        return format_graph(graph)


# ----------------------------------------------------------------------------- the passes

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


def _autodiff(graph, stages):
    return with_gradients(graph), None


def _simplify(graph, stages):
    from .simplify import simplify
    simplified = simplify(graph)
    return simplified, simplified.simplify_stats


def _schedule(graph, stages):
    from .collective_schedule import schedule_collectives
    return schedule_collectives(graph)


def _fuse(graph, stages):
    from .collective_schedule import check_start_order
    from .fusion import fuse
    fusion = fuse(graph)
    if stages.results.get("schedule"):  # (a graph with collectives)
        check_start_order(fusion)
    return graph, fusion


def _plan(graph, stages):
    from .memory import plan_memory
    return graph, plan_memory(graph, stages.results["fuse"])


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


PASSES = (
    Pass("autodiff", "autodiff", _autodiff, applies=lambda options: options["differentiate"]),
    Pass("simplify", "simplified", _simplify),
    Pass("schedule", "scheduled", _schedule),
    Pass("fuse", "fused", _fuse, lambda graph, stages: fused_text(graph, stages.fusion)),
    Pass("plan", "planned", _plan, lambda graph, stages: planned_text(graph, stages.fusion, stages.plan),
         check=lambda plan: plan.check()),
)
STAGES = ("traced",) + tuple(each.stage for each in PASSES)


def stage_names(passes=None):
    """("traced", then each pass's stage) for `passes` (default PASSES, read at call time)."""
    return ("traced",) + tuple(each.stage for each in (PASSES if passes is None else passes))


# ----------------------------------------------------------------------------- running them

def run_passes(graph, differentiate=False, dump_dir=None, stop_after=None, timer=None, check=True):
    """Run PASSES on `graph` (left untouched) up to the stage `stop_after` (default: all of
    them); returns `Stages`.
    `differentiate` adds the parameter gradients of a forward graph (the autodiff pass);
    `timer` (compiler's StageTimer) times each pass that runs under its name; `check`
    verifies the results that passes can check (the memory plan's non-overlap)."""
    names = stage_names()
    stop_after = names[-1] if stop_after is None else stop_after
    if stop_after not in names:
        raise ValueError(f"unknown stage {stop_after!r}; stages: {', '.join(names)}")
    options = {"differentiate": differentiate}
    stages = Stages()
    stages.graphs["traced"] = current = graph
    for each in PASSES[:names.index(stop_after)]:
        if each.applies is None or each.applies(options):
            if timer is None:
                current, result = each.run(current, stages)
            else:
                with timer(each.name):
                    current, result = each.run(current, stages)
            stages.results[each.name] = result
            stages.ran.append(each)
            if check and each.check is not None:
                each.check(result)
        stages.graphs[each.stage] = current
    dump_dir = dump_dir if dump_dir is not None else config.DUMP_DIR
    if dump_dir:
        try:
            stages.dump_folder = write_dumps(stages, dump_dir)
        except OSError as error:
            _warn_unwritable(dump_dir, error)
    return stages


_WARNED = set()


def _warn_unwritable(dump_dir, error):
    """EMBER_DUMP names a place that cannot be written: say so once; compiling goes on."""
    if dump_dir not in _WARNED:
        _WARNED.add(dump_dir)
        import warnings
        warnings.warn(f"ember: EMBER_DUMP={dump_dir}: cannot write the dumps there ({error.strerror or error}); "
                      f"set it to a writable folder", stacklevel=3)


_DUMPED = {}  # folder -> the traced text dumped there by this process


def dump_folder(dump_dir, graph):
    """DIR/<program>.<segment>: a program traced again with other contents (another batch
    size, a recompile) gets DIR/<program>.<segment>-2, -3, ... instead of overwriting."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", graph.name) or "graph"
    text = str(graph)
    for n in range(1, 1000):
        folder = os.path.join(dump_dir, name if n == 1 else f"{name}-{n}")
        if _DUMPED.setdefault(folder, text) == text:
            return folder
    return folder


def write_dumps(stages, dump_dir):
    """Text, DOT and a diff against the previous stage for every stage, written atomically;
    returns the folder."""
    from ember.ir.dot import graph_to_dot
    folder = dump_folder(dump_dir, stages.graphs["traced"])
    os.makedirs(folder, exist_ok=True)
    fusion = stages.fusion
    previous = None
    for index, stage in enumerate(s for s in stage_names() if s in stages.graphs):
        text = stages.text(stage)
        graph = stages.graphs[stage]
        group_of = None
        if stage in ("fused", "planned") and fusion is not None:
            group_of = lambda n: ((fusion.group_of[n], fusion.groups[fusion.group_of[n]].name)  # noqa: E731
                                  if n in fusion.group_of else None)
        stem = os.path.join(folder, f"{index}_{stage}")
        write_atomically(stem + ".txt", text)
        write_atomically(stem + ".dot", graph_to_dot(graph, group_of))
        if previous is not None:
            diff = difflib.unified_diff(previous[1].splitlines(), text.splitlines(), previous[0], stage, lineterm="")
            write_atomically(stem + ".diff", "\n".join(diff))
        previous = (stage, text)
    return folder


def write_atomically(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)


def render_stage(graph, stage, differentiate=False):
    """The text `ember dump --stage` prints for a pass stage."""
    stages = run_passes(graph, differentiate=differentiate, stop_after=stage)
    return stages.text(stage)
