"""The `.grad`s a compiled program binds by their param's path (external_names.GradOf: whatever
`p.grad` is at each call; frontend/jit.py binds them). The trace saw each as a tensor of its own,
of one shape and dtype; a later call may find `p.grad` set to another closed-over tensor, to an
argument's memory, to the `.grad` of another param too, or to a tensor of another shape or dtype
(ember's setter takes it; eager mode's optimizer refuses it). The program cannot reproduce
those: the call traces again, and the new trace sees them."""
from .external_names import GradOf
from .views import memory_owner
from .segments import walk_segments


def param_sources(tree):
    """({param name: module state name}, [(param name, reference)], BoundGrads or None) for every
    param of the tree's segments: module state by name, closed-over tensors through their weak
    references, a `.grad` through its param (after it)."""
    sources, externals = {}, {}
    segments = list(walk_segments(tree.root))
    for segment in segments:
        written = [m.target for m in segment.mutations if m.kind.startswith("param")]
        written += [target for kind, target, _ in segment.grads_are_views if kind == "param"]  # (`w.grad = x`)
        for name in list(segment.graph.params) + written:  # a closed-over tensor may be written only
            ref = segment.externals.get(name)
            if ref is not None:
                externals[name] = ref
            else:
                sources[name] = name
    ordered = sorted(externals.items(), key=lambda item: type(item[1]) is GradOf)
    grads = [name for name, ref in ordered if type(ref) is GradOf]
    return sources, ordered, BoundGrads(segments, grads) if grads else None


class BoundGrads:
    """The `.grad`s a tree binds by path, and what the trace saw of them."""

    def __init__(self, segments, names):
        self.names = names
        self.specs = {}  # name -> (shape or None where a dim is symbolic, numpy dtype)
        for segment in segments:
            for name in names:
                node = segment.graph.params.get(name)
                if node is not None and name not in self.specs:
                    spec = segment.graph.spec(node)
                    shape = tuple(spec.shape) if all(type(d) is int for d in spec.shape) else None
                    self.specs[name] = (shape, spec.dtype.np)
        # (apart when traced: from each other, the other params and the arguments; else each is held
        # to the very tensor it was, whose sharing the program reproduces)
        self.apart = all(getattr(segment, "grads_apart", True) for segment in segments)
        self.held = {name: ref for segment in segments for name, ref in segment.grads_held.items()}
        self.roots = frozenset()  # the memory of this call's .grads (ids of the arrays owning it)
        self.grad_names = frozenset(names)

    def fit(self, params):
        """Do this call's `.grad`s (in `params`, the call's params) still fit the program?"""
        roots = set()
        for name in self.names:
            data = params[name]._data
            spec = self.specs.get(name)
            if spec is not None and (data.dtype != spec[1] or (spec[0] is not None and data.shape != spec[0])):
                return False
            if not data.flags.c_contiguous or not data.flags.writeable:  # (an expanded view, say: eagerly
                return False  # an in-place update of it raises)
            roots.add(id(memory_owner(data)))
        if not self.apart and any(params[name] is not ref() for name, ref in self.held.items()):
            return False
        if self.apart:
            if len(roots) != len(self.names):
                return False
            grads = self.grad_names  # (every call: `q.data = p.grad` changes what a param's memory is)
            if any(id(memory_owner(t._data)) in roots for name, t in params.items() if name not in grads):
                return False
        self.roots = frozenset(roots)
        return True

    def overlap(self, inputs):
        """Does an argument share memory with one of this call's .grads (set by fit)?"""
        return self.apart and any(id(memory_owner(t._data)) in self.roots for t in inputs)
