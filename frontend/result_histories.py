"""What eager autograd gave each result of a trace, for a compiled call to give it again
(frontend/tracer.py `Tracer.finish` records these facts; frontend/jit.py acts on them): results
whose history cannot be read any more (stale) or was freed by a backward() inside, and results
that are views of other results, made again as views on every compiled call. Also the history
an argument had when the call began, which a backward() inside the trace continues from.
"""
import numpy as np

from .tensor import StaleView, Tensor
from .views import chain_suffix


def stale_histories(outputs):
    """{position: PyTorch's error} for each result whose history cannot be read any more (an
    output of split/chunk/unbind or a no_grad view, whose memory was written since): a compiled
    call's result fails backward with that error, as eagerly."""
    stale = {}
    for position, tensor in enumerate(outputs):
        if type(tensor) is StaleView:
            try:
                tensor.grad_fn
            except RuntimeError as error:
                stale[position] = str(error)
    return stale


def creation_of(view):
    """(mode, output number, op, has history) of a view PyTorch limits in-place ops on, else None:
    what a compiled call needs to make the view again as eagerly (a view taken in grad mode of
    a no_grad view has a history that passes no gradient)."""
    if not view._creation:
        return None
    return view._creation, view._output_nr, view._created_by, view.__dict__.get("grad_fn") is not None


def views_of_outputs(outputs, skip):
    """[(position, source position, chain, detached, creation)] for each result that is a view
    of another result (`return h, h.view(-1)`), sources first: a compiled call derives it from
    that result again, so the two share memory, as eagerly."""
    found = []
    for position, tensor in enumerate(outputs):
        if position in skip or tensor._base is None:
            continue
        best = None
        for source, other in enumerate(outputs):
            if source == position or (other._base if other._base is not None else other) is not tensor._base:
                continue
            if other._detached and not tensor._detached:
                continue  # (a detached alias cannot give a view its autograd history)
            suffix = chain_suffix(tensor._view_chain, other._view_chain if other._base is not None else ())
            if suffix is None or not suffix and other._detached == tensor._detached and source > position:
                continue  # (the same view twice: from the first)
            if best is None or len(suffix) < len(best[1]):
                best = (source, suffix)
        if best is not None:
            creation = creation_of(tensor)
            detached = tensor._detached and not outputs[best[0]]._detached
            found.append(((len(tensor._view_chain), tensor._detached, position), position, *best, detached, creation))
    return [entry[1:] for entry in sorted(found, key=lambda entry: entry[0])]


def freed_histories(outputs, skip):
    """Positions of results whose history a backward() in the traced code has already run
    through and freed where it needs what it saved: eagerly, another backward() from them
    raises PyTorch's "a second time" (a history of slices, sums and adds runs again)."""
    from .autograd import _topological_order  # (the engine's own walk)
    return [position for position, tensor in enumerate(outputs) if position not in skip
            and any(raises_when_run_again(node) for node in _topological_order([tensor.grad_fn]))]


def history_of(tensor):
    """The tensor's grad_fn, or None where reading it raises (a view whose history PyTorch
    cannot re-derive: using it in grad mode raises, which the traced call itself does)."""
    try:
        return tensor.grad_fn
    except RuntimeError:
        return None


def entry_history(tensor):
    """(grad_fn, output number) of an argument as the call begins, or None: a leaf, or a view
    PyTorch cannot re-derive."""
    history = history_of(tensor)
    return None if history is None else (history, tensor._output_nr)


def with_history(array, history):
    """A tensor of `array` whose autograd history is `history` (from entry_history): where the
    function wrote into the argument in place, its own tensor has a newer history, and a
    backward() from the argument's value at the call's start must start at the older one."""
    tensor = Tensor._wrap(array)
    tensor.requires_grad = True
    tensor.grad_fn, tensor._output_nr = history
    return tensor


def raises_when_run_again(node):
    """Would a backward through this freed node raise PyTorch's "a second time" error? Asked
    ahead of time, for results of traced code whose history a backward inside freed
    (`freed_histories`): a primitive's VJP is run once on zeros with the stand-ins to see
    whether it reads them; a custom Function counts as raising when it saved tensors (its
    backward is user code, not run to find out)."""
    from .autograd import Node, _kept_values, _uses_output, set_grad_enabled
    if not isinstance(node, Node) or not node.freed or node.saves_no_values:
        return False
    ctx = getattr(node.prim, "ctx", None)
    if ctx is not None:
        return bool(node.checked or ctx._saved)
    if _kept_values(node):
        return True
    g = Tensor._wrap(np.zeros(node.out.shape, node.out.dtype))
    try:
        with set_grad_enabled(False):
            node.prim.vjp(g, node.saved_output(False, freed=True) if _uses_output(node) else None,
                          *node.unpack_inputs(freed=True), **node.attrs)
    except Exception:  # (a FreedValueError; anything else: assume it reads what it saved, as most do)
        return True
    return False
