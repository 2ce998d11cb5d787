"""Programs of one call signature for different `.grad` states (frontend/jit.py). A program
traced where the code read a `.grad` holds only while that tensor still has none, or still has
one (TraceTree.without_grad and with_grad, noted by Tracer.read_grad). When that stops holding,
the call traces again; the tree it had is set aside rather than dropped, and comes back once its
state does. A loop whose gradients come and go (accumulation over several calls, zero_grad
outside the compiled step now and then, `if w.grad is None` in user code) then traces each
state once, not again at every change until the recompile limit."""

KEPT_PER_SIGNATURE = 4  # trees set aside for one signature, the most recent kept


def grad_state_holds(tree):
    """Does each tensor the tree's program read a .grad of still have none, or one, as traced?
    (A tensor freed since cannot be passed again: it decides nothing.)"""
    for ref in tree.without_grad:
        tensor = ref()
        if tensor is not None and tensor._grad is not None:
            return False
    for ref in tree.with_grad:
        tensor = ref()
        if tensor is not None and tensor._grad is None:
            return False
    return True


class GradStateTrees:
    """The trees set aside, per signature, for the `.grad` state each was traced in."""

    def __init__(self):
        self._aside = {}  # signature -> [TraceTree]

    def set_aside(self, signature, tree):
        """`tree` no longer holds for this call's .grad state (a new trace takes its place)."""
        if tree.without_grad or tree.with_grad:
            aside = self._aside.setdefault(signature, [])
            aside.append(tree)
            del aside[:-KEPT_PER_SIGNATURE]

    def for_this_call(self, signature, tree):
        """`tree`, or where its .grad state does not hold, a tree set aside whose state does
        (which takes its place; `tree` is set aside in turn)."""
        aside = self._aside.get(signature)
        if not aside or grad_state_holds(tree):
            return tree
        for position, other in enumerate(aside):
            if grad_state_holds(other):
                aside[position] = tree
                return other
        return tree
