"""Dynamic dims (automatic dynamic): one program for every size of a dim that changes
between calls, built from two traces of the same function at two sizes.

ember traces by running the function, so a trace holds sizes, not their origin. When a call
differs from an earlier one only in some dims of tensor arguments, `symbolize(old, new)`
lines the two traces up node by node: each changed input dim becomes a size symbol (dims that
changed from the same old size to the same new size share one); every node's shape is
recomputed by its op's shape rule (ember/ops) on symbolic shapes, and every attribute that
differs between the traces (a `view`'s target shape, a slice's stop) is written as
`c*s + d` for the one symbol that fits both traces. The result must reproduce both traces
exactly when the symbols take their two values; anything else (a different program, a float
constant that depends on the size, a shape rule the ranges cannot decide) raises
`NotDynamic` with the reason, and the dims stay static.
"""
import numpy as np

from ember.ir import Graph
from ember.ir.symbols import MIN_SIZE, SymDim, SymbolicDecision, SymbolTable, evaluate, used_symbols
from ember.ops import PRIMITIVES
from .watched_sizes import SizeInt, plain_sizes


class NotDynamic(ValueError):
    """The two traces are not one program over symbolic sizes; the message says why."""


def symbolize(old, new, dynamic=None):
    """A graph like `new` whose shapes and attributes are symbolic in the input dims that differ
    from `old` (or, with `dynamic`, in the input dims {(input position, dim)} named there);
    its `symbols` attribute is the SymbolTable. Raises NotDynamic."""
    _same_frame(old, new)
    table = SymbolTable()
    by_values = {}  # (old size, new size) -> symbol
    sym_of_dim = {}
    for position, (a_id, b_id) in enumerate(zip(old.inputs, new.inputs)):
        a_shape, b_shape = old.node(a_id).shape, new.node(b_id).shape
        if len(a_shape) != len(b_shape):
            raise NotDynamic(f"input {new.node(b_id).name} changed rank")
        for dim, (x, y) in enumerate(zip(a_shape, b_shape)):
            wanted = dynamic is not None and (position, dim) in dynamic
            if x == y and not wanted:
                continue
            if min(x, y) < MIN_SIZE:
                raise NotDynamic(f"dim {dim} of {new.node(b_id).name} is {min(x, y)}: sizes 0 and 1 are specialised")
            if x == y:
                raise NotDynamic(f"dim {dim} of {new.node(b_id).name} has the same size ({x}) in both traces")
            name = by_values.get((x, y))
            if name is None:
                name = by_values[(x, y)] = f"s{len(by_values)}"
                table.traced[name] = (x, y)
                table.sources[name] = []
            table.sources[name].append((b_id, dim))
            sym_of_dim[(b_id, dim)] = name
    if not table.sources:
        raise NotDynamic("no input dim changed")
    old_sizes = {s: v[0] for s, v in table.traced.items()}
    new_sizes = {s: v[1] for s, v in table.traced.items()}
    out = Graph(new.name)
    for a, b in zip(old.nodes(), new.nodes()):
        where = f"{b.op} {b.name}" + (f" at {b.source}" if b.source else "")
        if (a.id, a.op, a.inputs, a.dtype) != (b.id, b.op, b.inputs, b.dtype) or len(a.shape) != len(b.shape):
            raise NotDynamic(f"the traces differ at %{b.id} ({where} vs {a.op} {a.name}): the code takes "
                             f"another path at the new size")
        if b.op == "input":
            shape = tuple(SymDim.symbol(sym_of_dim[(b.id, d)]) if (b.id, d) in sym_of_dim else size
                          for d, size in enumerate(b.shape))
            attrs = {k: v for k, v in b.attrs.items() if k != "index"}
            out.add_input(shape, b.dtype, b.name, node_id=b.id, **attrs)
            continue
        if b.op == "param":
            if a.shape != b.shape:
                raise NotDynamic(f"param {b.name} changed shape")
            out.add_param(b.attrs["name"], b.shape, b.dtype, node_id=b.id)
            continue
        if b.op == "constant" and _key(a.attrs["value"]) != _key(b.attrs["value"]) and (
                np.ndim(a.attrs["value"]) or np.ndim(b.attrs["value"])):
            out.add_node(*_symbolic_constant(a, b, table.traced, where), node_id=b.id, source=b.source)
            continue
        attrs = {k: _fit(a.attrs.get(k), v, table.traced, where, k) for k, v in b.attrs.items()}
        if set(a.attrs) != set(b.attrs):
            raise NotDynamic(f"{where}: its attributes differ between the traces")
        specs = [out.spec(i) for i in b.inputs]
        try:
            shape = PRIMITIVES[b.op].infer(*specs, **attrs).shape
        except SymbolicDecision as error:
            raise NotDynamic(f"{where}: {error}") from None
        shape = tuple(shape)
        if evaluate(shape, new_sizes) != tuple(b.shape) or evaluate(shape, old_sizes) != tuple(a.shape):
            raise NotDynamic(f"{where}: its shape [{','.join(map(str, shape))}] does not give the traced "
                             f"{list(a.shape)} and {list(b.shape)}")
        out.add_node(b.op, b.inputs, shape, b.dtype, attrs, b.name, node_id=b.id, source=b.source)
    for g_a, g_b in zip(old.guards, new.guards):
        if _key(g_a.expected) != _key(g_b.expected):
            raise NotDynamic(f"the guard at {g_b.source} ({g_b.code}) saw {g_a.expected!r} and {g_b.expected!r}")
    out.outputs = list(new.outputs)
    out.mutations = list(new.mutations)
    out.guards = list(new.guards)
    out._next_id = new._next_id
    out.symbols = table
    return out


def restrict_to_read_inputs(graph):
    """Keep only the symbol sources the compiled program receives (the inputs some node reads:
    an unread or returned-as-is argument is not passed to it); NotDynamic when a symbol some
    shape holds is left without one. Symbols no shape holds are dropped."""
    read = {i for _, data in graph.nx.nodes(data=True) for i in data["inputs"]}
    used = used_symbols(graph, skip={n for n in graph.inputs if n not in read})
    sources = {}
    for name, places in graph.symbols.sources.items():
        kept = [place for place in places if place[0] in read]
        if name in used and not kept:
            raise NotDynamic(f"the size {name} comes only from arguments the program does not read")
        if name in used:
            sources[name] = kept
    graph.symbols = SymbolTable(sources, {k: v for k, v in graph.symbols.traced.items() if k in sources})


def _same_frame(old, new):
    if (len(old), list(old.inputs), old.params, list(old.outputs), len(old.guards)) != (
            len(new), list(new.inputs), new.params, list(new.outputs), len(new.guards)):
        raise NotDynamic("the traces have different nodes, inputs, params, outputs or guards")
    if [(m.kind, m.target, m.node) for m in old.mutations] != [(m.kind, m.target, m.node) for m in new.mutations]:
        raise NotDynamic("the traces write back different values")


def _fit(a, b, traced, where, key):
    """Attribute value `b` (new trace), symbolic where it differs from `a` (old trace)."""
    if isinstance(b, (tuple, list)):
        if not isinstance(a, (tuple, list)) or len(a) != len(b):
            raise NotDynamic(f"{where}: attribute {key} differs between the traces ({a!r} vs {b!r})")
        return type(b)(_fit(x, y, traced, where, key) for x, y in zip(a, b))
    if isinstance(b, dict):
        if not isinstance(a, dict) or set(a) != set(b):
            raise NotDynamic(f"{where}: attribute {key} differs between the traces")
        return {k: _fit(a[k], v, traced, where, key) for k, v in b.items()}
    if _key(a) == _key(b):
        return plain_sizes(b)
    if key == "value" and _integral_float(a) and _integral_float(b):
        # (a float that counts elements, mean's divisor: the constant's value is computed from the sizes)
        a, b = int(a), int(b)
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)) and not isinstance(b, (bool, np.bool_)):
        fits = []
        for name, (x, y) in traced.items():
            slope, rest = divmod(int(b) - int(a), y - x)
            if rest == 0 and slope:
                fits.append(slope * SymDim.symbol(name) + (int(a) - slope * x))
        if len(fits) == 1:
            return fits[0]
        if len(fits) > 1:
            raise NotDynamic(f"{where}: attribute {key} ({a} vs {b}) fits several sizes")
    raise NotDynamic(f"{where}: attribute {key} is {a!r} at one size and {b!r} at the other "
                     f"(a value computed from the size)")


def _integral_float(value):
    return isinstance(value, (float, np.floating)) and float(value).is_integer() and abs(value) < 2 ** 52


def _symbolic_constant(a, b, traced, where):
    """(op, inputs, shape, dtype, attrs, name) for a constant whose array differs between the
    traces: filled with one value (`ones(n, n)`: a constant of symbolic shape) or an arange (iota)."""
    va, vb = np.asarray(a.attrs["value"]), np.asarray(b.attrs["value"])
    shape = tuple(_fit(x, y, traced, where, "shape") for x, y in zip(va.shape, vb.shape)) \
        if va.ndim == vb.ndim else None
    if shape is not None and va.size and vb.size and (va == va.flat[0]).all() and (vb == vb.flat[0]).all() \
            and _key(va.flat[0]) == _key(vb.flat[0]):
        return "constant", (), shape, b.dtype, dict(value=vb.flat[0].item(), shape=shape, dtype=b.dtype), b.name
    iota = _as_iota(va, vb, b.dtype)
    if shape is None or iota is None:
        raise NotDynamic(f"{where}: a tensor created from values that depend on the size (only aranges and "
                         f"tensors of one value, such as ones(n), can be)")
    return "iota", (), shape, b.dtype, dict(length=shape[0], start=iota[0], step=iota[1], dtype=b.dtype), b.name


def _as_iota(a, b, dtype):
    """(start, step) when both arrays are aranges of one start and step, else None."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or b.ndim != 1 or min(len(a), len(b)) < 2:
        return None
    start, step = b[0].item(), (b[1] - b[0]).item()
    for values in (a, b):
        if not np.array_equal(values, PRIMITIVES["iota"].impl(len(values), start, step, dtype)):
            return None
    return start, step


def _key(value):
    if isinstance(value, SizeInt):
        value = int.__int__(value)
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float) and value != value:
        return ("nan",)
    if isinstance(value, (list, tuple, dict)):
        return repr(plain_sizes(value))
    return (type(value).__name__, value)


def instantiate(graph, sizes):
    """A static copy of a symbolic graph at `sizes` ({symbol: int}) (tests, the interpreter)."""
    out = graph.copy()
    for n in out.nx.nodes:
        data = out.nx.nodes[n]
        data["shape"] = evaluate(tuple(data["shape"]), sizes)
        data["attrs"] = evaluate(data["attrs"], sizes)
    out.symbols = None
    return out


DYNAMIC = "s"  # a dynamic dim of size >= 2 in a call signature (sizes 0 and 1 stay in it)


class DynamicDims:
    """Which dims of a compiled function's tensor arguments are dynamic, learned call by call
    (frontend/jit.py asks on every miss). `mode` is ember.compile's `dynamic`: None (automatic:
    a dim becomes dynamic when a call differs from the one before only in that dim's size),
    True (the same, and the report says so), False (never). `ember.mark_dynamic(t, dim)` lets a
    dim become dynamic even under dynamic=False; `ember.mark_static(t, dim)` never. ember traces
    by running the function, so a dynamic program is built from two traces: the first call's
    program is static in every case."""

    def __init__(self, mode=None):
        self.mode = mode
        self.dims = {}  # (argument path, dim) -> why it is dynamic
        self.static = {}  # (argument path, dim) -> why it stays static
        self.sizes = {}  # (argument path, dim) -> (earlier size, later size) when it became dynamic

    def rewrite(self, parts):
        """Signature parts with each dynamic dim of size >= 2 replaced by DYNAMIC."""
        if not self.dims:
            return parts
        out = []
        for part in parts:
            if part[0] == "tensor" and any((part[1], d) in self.dims for d in range(len(part[2]))):
                shape = tuple(DYNAMIC if (part[1], d) in self.dims and size >= MIN_SIZE else size
                              for d, size in enumerate(part[2]))
                part = (part[0], part[1], shape) + tuple(part[3:])
            out.append(part)
        return out

    def learn(self, previous, signature, tensors, name_of):
        """The dims that become dynamic with this call (its signature against the previous
        one's), or []. `tensors` maps argument paths to this call's tensors (their marks)."""
        if previous is None or len(previous) != len(signature):
            return []
        changed = []
        for old, new in zip(previous, signature):
            if old == new:
                continue
            if old[0] != "tensor" or new[0] != "tensor" or old[1] != new[1] or old[3:] != new[3:] or \
                    len(old[2]) != len(new[2]):
                return []  # something besides sizes changed: a new static program
            for d, (x, y) in enumerate(zip(old[2], new[2])):
                if x != y:
                    changed.append((new[1], d, x, y))
        wanted = []
        for path, d, x, y in changed:
            marks = getattr(tensors.get(path), "_dynamic_marks", {})
            allowed = marks.get(d, self.mode is not False)
            if (path, d) in self.static or not allowed or DYNAMIC in (x, y) or min(x, y) < MIN_SIZE:
                return []
            wanted.append((path, d, x, y))
        for path, d, x, y in wanted:
            self.sizes[(path, d)] = (x, y)
            how = "dynamic=True" if self.mode else "marked with ember.mark_dynamic" if \
                getattr(tensors.get(path), "_dynamic_marks", {}).get(d) else "automatic dynamic"
            self.dims[(path, d)] = f"dim {d} of {name_of(path)}: changed {x} -> {y} ({how})"
        return [(path, d) for path, d, _, _ in wanted]

    def checked(self, dims):
        """The dims' program was traced again at a third size and is the same: say so."""
        for path, d in dims:
            if (path, d) in self.dims:
                self.dims[(path, d)] += "; the same program traced at a third size"

    def traced_sizes(self, dims, which):
        """The sizes the dims had when they became dynamic (which: 0 the earlier call, 1 the later)."""
        return [self.sizes[d][which] for d in dims]

    def refuse(self, dims, reason, name_of):
        """Keep `dims` static from now on, with the reason (NotDynamic's)."""
        for path, d in dims:
            self.dims.pop((path, d), None)
            self.static[(path, d)] = f"dim {d} of {name_of(path)} stays static: {reason}"

    def forget(self, dims):
        """Static again for now (no reason recorded: a later change may make them dynamic)."""
        for key in dims:
            self.dims.pop(key, None)

    def report_lines(self):
        return list(self.dims.values()) + list(self.static.values())


def mark_dynamic(tensor, dim):
    """As torch._dynamo.mark_dynamic: let `dim` of this argument become dynamic (at its first change)."""
    for d in ([dim] if isinstance(dim, int) else dim):
        marks = dict(getattr(tensor, "_dynamic_marks", {}))
        marks[d % max(tensor.dim(), 1)] = True
        tensor._dynamic_marks = marks


def mark_static(tensor, dim):
    """As torch._dynamo.mark_static: `dim` of this argument is never dynamic."""
    for d in ([dim] if isinstance(dim, int) else dim):
        marks = dict(getattr(tensor, "_dynamic_marks", {}))
        marks[d % max(tensor.dim(), 1)] = False
        tensor._dynamic_marks = marks
