"""ember.compile's options as torch.compile takes them, and what each does in ember (frontend/jit.py's
docstring of `compile` says it for users): mode "default" is ember's one way of compiling, the
others are accepted with a warning, as they change nothing here; `fullgraph=True` refuses a
graph break (a guard on a tensor's value, a call that must run eagerly) with its source line;
inductor `options` warn that ember does not act on them; `dynamic` is frontend/dynamic_shapes.py's."""
import warnings


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_mode(mode, options):
    """A torch.compile mode accepted (warning once where it changes nothing) or refused."""
    if options is not None:
        raise RuntimeError("Either mode or options can be specified, but both can't be specified at the same time.")
    if mode not in COMPILE_MODES:
        raise RuntimeError(f"Unrecognized mode={mode}, should be one of: {', '.join(COMPILE_MODES)}")
    if mode != "default":
        what = ("ember already runs a compiled program's kernels in one call (what CUDA graphs buy PyTorch)"
                if mode == "reduce-overhead" else "ember's kernels have fixed tilings chosen for this machine")
        warnings.warn(f"ember.compile(mode={mode!r}) compiles as mode='default': {what}", UserWarning, stacklevel=3)


_WARNED = set()


def check_dynamic_and_options(dynamic, options):
    """Check `dynamic`; warn once for options, which ember accepts from torch.compile's signature but does not act on."""
    if dynamic not in (None, True, False):
        raise TypeError(f"ember.compile(dynamic=...) takes None, True or False, not {dynamic!r}")
    if options and "options" not in _WARNED:
        _WARNED.add("options")
        warnings.warn(f"ember.compile(options={options!r}): ember has no inductor options; they change nothing",
                      UserWarning, stacklevel=3)


class GraphBreak(RuntimeError):
    """ember.compile(fullgraph=True) found something that splits the program or runs it eagerly."""


def refuse_graph_break(name, graph, eager_reason):
    """With fullgraph=True: a trace with a guard (Python read a tensor's value) or a reason to run
    eagerly raises, naming the first one and its source line, as torch.compile(fullgraph=True)."""
    if graph.guards:
        raise GraphBreak(f"ember.compile({name}, fullgraph=True): the function breaks the graph at "
                         f"{graph.guards[0].describe()}; compute both sides with ember.where instead of "
                         f"Python control flow on tensor values, or compile with fullgraph=False")
    if eager_reason:
        raise GraphBreak(f"ember.compile({name}, fullgraph=True): the call cannot be compiled as one graph: "
                         f"{eager_reason}")
