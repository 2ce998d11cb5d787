"""How ember.compile's calls make dims dynamic: CompiledFunction's part (frontend/jit.py) that
learns which dims change, builds the dynamic program from two traces (frontend/dynamic_shapes.py)
and checks it once more at a third size. Its state is the CompiledFunction's: `_dynamic` (the
DynamicDims), `_cache`, `_signatures` and `report`."""
import sys

from ember import config
from ember.runtime.device_arrays import device_of
from ember.runtime import device_arrays
from .dynamic_shapes import NotDynamic, restrict_to_read_inputs, symbolize
from .segments import same_structure
from .signatures import input_name
from .watched_sizes import PLAIN_USES, SizeInt

DYNAMIC_BACKENDS = ("llvm", "interpret")  # the backends whose programs take sizes when they run


class DynamicCalls:
    """Mixin of CompiledFunction: dynamic dims, from learning them to checking their program."""

    def _learn_dynamic_dims(self, signature, flat):
        """(the tree to build a dynamic program with, the dims that became dynamic) when this
        call differs from the previous one only in sizes of dims that may be dynamic, else None."""
        if not self._signatures or self.backend.name not in DYNAMIC_BACKENDS:
            return None
        if device_arrays.in_use and any(device_of(t._data) is not None for _, t in flat):
            return None  # (the GPU target compiles static shapes only)
        previous = self._signatures[-1]
        base = self._cache.get(previous)
        if base is None or base.trace_graph is None or base.trace_graph.symbols is not None:
            return None
        dims = self._dynamic.learn(previous, signature, dict(flat), lambda path: input_name(self.fn, path))
        return (base, dims) if dims else None

    def _symbolize(self, graph, tracer, dynamic, signature, args, kwargs, result):
        """(the dynamic graph, signature) built from this trace and the base tree's, or (graph,
        the static signature) when they are not one program over symbolic sizes."""
        base, dims = dynamic
        try:
            if graph.guards:
                raise NotDynamic("the function branches on tensor values (a guard)")
            if tracer.size_tests:
                op, size, other, line = tracer.size_tests[0]
                raise NotDynamic(f"the code at {line} uses the size {size} " + (
                    f"as a plain number ({other})" if op in PLAIN_USES else f"in a comparison with {other} ({op})")
                    + ", which could go another way at another size")
            returned = _sizes_in(result)
            if returned:
                raise NotDynamic(f"the function returns the size {returned[0]} as a Python value (a compiled call "
                                 f"would return the traced one)")
            facts = tracer.output_facts
            if facts["output_views"] or facts["views_of_outputs"]:
                raise NotDynamic("the function returns a view (its shape is rebuilt from the traced sizes)")
            try:
                symbolic = symbolize(base.trace_graph, graph)
            except NotDynamic:
                raise
            except Exception as error:  # (a shape rule refusing the fitted sizes: OpError, SymbolicDecision, ...)
                raise NotDynamic(f"{type(error).__name__}: {error}") from None
            restrict_to_read_inputs(symbolic)
            self.report.dynamic_dims = self._dynamic.report_lines()
            self.report.symbols = symbolic.symbols.describe(symbolic) + "; guards: " + ", ".join(
                f"{name} >= 2" for name in symbolic.symbols.sources) + " (sizes 0 and 1 have programs of their own)"
            return symbolic, signature
        except NotDynamic as error:
            if base.unconfirmed:  # (the earlier trace may have been a first step creating state: try again later)
                self._dynamic.forget(dims)
                if config.DEBUG:
                    print(f"ember.compile({self.name}): not dynamic yet: {error}", file=sys.stderr)
            else:
                self._dynamic.refuse(dims, str(error), lambda path: input_name(self.fn, path))
            self.report.dynamic_dims = self._dynamic.report_lines()
            return graph, self._signature_of(args, kwargs)

    def _new_sizes(self, tree, flat):
        """Whether a dynamic tree not yet checked at a third size meets one now."""
        return self._sizes_of(flat, tree.check_sizes[0]) not in tree.check_sizes[1]

    @staticmethod
    def _sizes_of(flat, dims):
        """The sizes of `dims` ([(argument path, dim)]) in a call's tensors ([(path, tensor)])."""
        by_path = dict(flat)
        return tuple(by_path[path]._data.shape[dim] if path in by_path else None for path, dim in dims)

    def _verify_dynamic(self, tree, graph, tracer, signature, args, kwargs):
        """A dynamic program's fitted sizes hold at two sizes; this trace at a third must give
        the same program (a size used nonlinearly, `n * n` or `n // 2`, shows here). If it does
        not, its dims become static from now on (this call's eager result stands)."""
        try:
            # (comparisons of sizes are the second trace's to judge: one that matters here changes the
            # program or its guards, which the comparison below sees; a small third size equal to a
            # static dim would only make false ones)
            again = symbolize(tree.trace_graph, graph)
            restrict_to_read_inputs(again)
            if not same_structure(again, tree.dynamic_graph):
                raise NotDynamic("the program traced at a third size differs (a size used in a way two traces "
                                 "cannot tell)")
            self._dynamic.checked(tree.check_sizes[0])
            self.report.dynamic_dims = self._dynamic.report_lines()
            tree.check_sizes = None
        except Exception as error:  # (NotDynamic, or a shape rule refusing the sizes)
            dims = tree.check_sizes[0]
            self._dynamic.refuse(dims, str(error) if isinstance(error, NotDynamic) else
                                 f"{type(error).__name__}: {error}", lambda path: input_name(self.fn, path))
            self.report.dynamic_dims = self._dynamic.report_lines()
            self._cache.pop(signature, None)
            self._signatures = [s for s in self._signatures if s != signature]


def _sizes_in(value):
    """The watched sizes (SizeInt) in a function's result: ints, tuples, lists, dicts of them."""
    if isinstance(value, SizeInt):
        return [int.__int__(value)]
    if isinstance(value, (tuple, list)):
        return [size for v in value for size in _sizes_in(v)]
    if isinstance(value, dict):
        return [size for v in value.values() for size in _sizes_in(v)]
    return []
