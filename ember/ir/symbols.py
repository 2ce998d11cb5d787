"""Symbolic dimensions: a shape entry or attribute of the IR may be a `SymDim`, a polynomial
with integer coefficients over size symbols (`s0`, `s1`, ...), e.g. `400*s0` after
`view(-1, 400)` of an `[s0,16,5,5]` tensor, or `s0*s1` after flattening two dynamic dims.

Every symbol stands for a size >= 2 (sizes 0 and 1 are specialised, as PyTorch does), so
comparisons such as `s0 == 1` or `4*s0 > 3` are decided without a guard. `==` is True only
when provably so (`s0 == 120` and `s0 == s1` are False: shapes that may differ are different);
an ordering the ranges do not decide (`s0 > 50`) raises `SymbolicDecision`, and the caller
keeps the program static. Converting a SymDim to an int raises too, so no
stage can specialise a dynamic program by accident. Shapes computed by the shape rules
(ember/ops) work unchanged on SymDims; `evaluate` gives the concrete value for sizes bound at
call time.
"""
import re
from dataclasses import dataclass, field

import numpy as np

MIN_SIZE = 2  # every symbol's smallest value: sizes 0 and 1 get their own programs


class SymbolicDecision(ValueError):
    """A question about symbolic sizes that their ranges do not answer (or an int needed)."""


class SizesDoNotFit(ValueError):
    """A dynamic program called with sizes its symbols do not take (two dims of one symbol that
    differ, or a size below MIN_SIZE): the caller runs that call another way."""


class SymDim:
    """sum(coefficient * product of symbols): `terms` is a sorted tuple of (monomial, coefficient),
    a monomial being a sorted tuple of symbol names (repeated for powers; () for the constant)."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms):
        self.terms = terms
        self._hash = hash(terms)

    # ------------------------------------------------------------------ building
    @staticmethod
    def symbol(name):
        return SymDim((((name,), 1),))

    @staticmethod
    def _from(mapping):
        terms = tuple(sorted((m, c) for m, c in mapping.items() if c))
        if not terms:
            return 0
        if len(terms) == 1 and terms[0][0] == ():
            return terms[0][1]
        return SymDim(terms)

    def _mapping(self):
        return dict(self.terms)

    @staticmethod
    def _as_mapping(other):
        if isinstance(other, SymDim):
            return other._mapping()
        other = int(other)
        return {(): other} if other else {}

    def __add__(self, other):
        if not _is_size(other):
            return NotImplemented
        total = self._mapping()
        for m, c in self._as_mapping(other).items():
            total[m] = total.get(m, 0) + c
        return SymDim._from(total)

    __radd__ = __add__

    def __neg__(self):
        return SymDim._from({m: -c for m, c in self.terms})

    def __sub__(self, other):
        if not _is_size(other):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other):
        if not _is_size(other):
            return NotImplemented
        return (-self) + other

    def __mul__(self, other):
        if not _is_size(other):
            return NotImplemented
        product = {}
        for m1, c1 in self.terms:
            for m2, c2 in self._as_mapping(other).items():
                m = tuple(sorted(m1 + m2))
                product[m] = product.get(m, 0) + c1 * c2
        return SymDim._from(product)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        """Exact division only (by an int or a SymDim dividing every term): `400*s0 // 400`."""
        if _is_size(other) and not isinstance(other, SymDim):
            other = int(other)
            if other and all(c % other == 0 for _, c in self.terms):
                return SymDim._from({m: c // other for m, c in self.terms})
        elif isinstance(other, SymDim):
            quotient = exact_quotient(self, other)
            if quotient is not None:
                return quotient
        else:
            return NotImplemented
        raise SymbolicDecision(f"{self} // {other} is not exact for every size")

    def __rfloordiv__(self, other):
        if other == 0:
            return 0
        raise SymbolicDecision(f"{other} // {self} depends on the size")

    def __mod__(self, other):
        if _is_size(other) and not isinstance(other, SymDim) and int(other) and all(
                c % int(other) == 0 for _, c in self.terms):
            return 0
        if isinstance(other, SymDim) and exact_quotient(self, other) is not None:
            return 0
        raise SymbolicDecision(f"{self} % {other} depends on the size")

    # ------------------------------------------------------------------ questions
    def bounds(self):
        """(lowest, highest) value over every symbol >= MIN_SIZE; highest None when unbounded.
        Decided per sign pattern: a polynomial whose non-constant coefficients share a sign is
        monotone in every symbol on that range."""
        at_min = sum(c * MIN_SIZE ** len(m) for m, c in self.terms)
        signs = {c > 0 for m, c in self.terms if m}
        if signs == {True}:
            return at_min, None
        if signs == {False}:
            return None, at_min
        return None, None

    def _decide(self, op, other):
        difference = self - other
        if isinstance(difference, int):
            return _compare(op, difference, 0)
        lo, hi = difference.bounds()
        outcome = None
        if op in ("eq", "ne"):
            if (lo is not None and lo > 0) or (hi is not None and hi < 0):
                outcome = op == "ne"
        elif op in ("gt", "ge"):
            if lo is not None and (lo > 0 or (op == "ge" and lo == 0)):
                outcome = True
            elif hi is not None and (hi < 0 or (op == "gt" and hi == 0)):
                outcome = False
        elif op in ("lt", "le"):
            if hi is not None and (hi < 0 or (op == "le" and hi == 0)):
                outcome = True
            elif lo is not None and (lo > 0 or (op == "lt" and lo == 0)):
                outcome = False
        if outcome is None:
            raise SymbolicDecision(f"{self} {_OPERATORS[op]} {other} depends on the sizes")
        return outcome

    def __eq__(self, other):
        if isinstance(other, SymDim) and other.terms == self.terms:
            return True
        if not _is_size(other):
            return NotImplemented
        try:
            return self._decide("eq", other)
        except SymbolicDecision:
            return False  # equal only when provably so: `s0 == 120` is False (a guard would be needed)

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __lt__(self, other):
        return self._decide("lt", other)

    def __le__(self, other):
        return self._decide("le", other)

    def __gt__(self, other):
        return self._decide("gt", other)

    def __ge__(self, other):
        return self._decide("ge", other)

    def __hash__(self):
        return self._hash

    def __bool__(self):
        return self._decide("ne", 0)

    def __index__(self):
        raise SymbolicDecision(f"an int was needed where the size is symbolic ({self})")

    __int__ = __index__

    # ------------------------------------------------------------------ reading
    @property
    def symbols(self):
        return sorted({name for m, _ in self.terms for name in m})

    def __repr__(self):
        return render(self)

    __str__ = __repr__

    def __reduce__(self):
        return (parse, (render(self),))


def _is_size(value):
    """An int (numpy's included, bool not) or a SymDim."""
    return isinstance(value, (SymDim, int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _compare(op, a, b):
    return {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]


_OPERATORS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def exact_quotient(numerator, denominator):
    """numerator / denominator when it divides exactly as polynomials (one-term denominators:
    `s0*s1*64 / (s1*64)` = s0), else None."""
    if isinstance(denominator, int):
        if denominator and isinstance(numerator, int):
            return numerator // denominator if numerator % denominator == 0 else None
        if denominator and all(c % denominator == 0 for _, c in numerator.terms):
            return SymDim._from({m: c // denominator for m, c in numerator.terms})
        return None
    if len(denominator.terms) != 1:
        return numerator if numerator == denominator else None
    (dm, dc), = denominator.terms
    terms = numerator.terms if isinstance(numerator, SymDim) else ((((), numerator),) if numerator else ())
    out = {}
    for m, c in terms:
        rest = list(m)
        for name in dm:
            if name not in rest:
                return None
            rest.remove(name)
        if c % dc:
            return None
        out[tuple(rest)] = c // dc
    return SymDim._from(out)


def is_symbolic(value):
    return isinstance(value, SymDim)


def has_symbols(value):
    """Whether a shape, attribute or nested tuple/list/dict holds a SymDim."""
    if isinstance(value, SymDim):
        return True
    if isinstance(value, (tuple, list)):
        return any(has_symbols(v) for v in value)
    if isinstance(value, dict):
        return any(has_symbols(v) for v in value.values())
    return False


def symbols_in(value):
    """The names of the symbols in a shape, attribute or nested tuple/list/dict."""
    if isinstance(value, SymDim):
        return set(value.symbols)
    if isinstance(value, (tuple, list)):
        return set().union(*map(symbols_in, value))
    if isinstance(value, dict):
        return set().union(*map(symbols_in, value.values()))
    return set()


def used_symbols(graph, skip=()):
    """The symbols in the shapes and attributes of a graph's nodes (but those in `skip`)."""
    return set().union(*(symbols_in((data["shape"], data["attrs"])) for node_id, data in graph.nx.nodes(data=True)
                         if node_id not in skip))


def evaluate(value, sizes):
    """`value` (an int, SymDim, or tuple/list/dict of them) with every symbol replaced by its
    size in `sizes` ({name: int})."""
    if isinstance(value, SymDim):
        total = 0
        for m, c in value.terms:
            for name in m:
                c *= sizes[name]
            total += c
        return total
    if isinstance(value, tuple):
        return tuple(evaluate(v, sizes) for v in value)
    if isinstance(value, list):
        return [evaluate(v, sizes) for v in value]
    if isinstance(value, dict):
        return {k: evaluate(v, sizes) for k, v in value.items()}
    return value


def render(value):
    """`400*s0`, `s0*s1 + 3`, `-s0 + 1`: the text form (parsed back by `parse`)."""
    if not isinstance(value, SymDim):
        return str(value)
    parts = []
    for m, c in sorted(value.terms, key=lambda t: (-len(t[0]), t[0])):
        names = "*".join(m)
        if not m:
            text = str(abs(c))
        elif abs(c) == 1:
            text = names
        else:
            text = f"{abs(c)}*{names}"
        parts.append(("-" if c < 0 else "+", text))
    first_sign, first = parts[0]
    out = ("-" if first_sign == "-" else "") + first
    for sign, text in parts[1:]:
        out += f" {sign} {text}"
    return out


_TERM = re.compile(r"\s*([+-])?\s*([^+-]+)")


def parse(text):
    """The inverse of `render`: "400*s0" -> SymDim; "7" -> 7."""
    text = str(text).strip()
    total = 0
    position = 0
    while position < len(text):
        match = _TERM.match(text, position)
        if not match:
            raise ValueError(f"not a symbolic size: {text!r}")
        sign, body = match.groups()
        term = -1 if sign == "-" else 1
        for factor in body.strip().split("*"):
            factor = factor.strip()
            term = term * (int(factor) if factor.isdigit() else SymDim.symbol(factor))
        total = total + term
        position = match.end()
    return total


def numel(shape):
    """The element count of a shape of ints and SymDims."""
    n = 1
    for d in shape:
        n = n * d
    return n


def _read(shape_of, place):
    size = shape_of(place[0])[place[1]]
    if len(place) == 2:
        return size
    return size // place[2] if size % place[2] == 0 else None


@dataclass
class SymbolTable:
    """The symbols of a dynamic graph: where each one's value is read at call time
    ({symbol: [(input node id, dim), ...]}, the first is read, the others must agree) and its
    values in the two traces it was built from."""

    sources: dict = field(default_factory=dict)
    traced: dict = field(default_factory=dict)  # symbol -> (old size, new size)

    def sizes(self, shape_of):
        """{symbol: size} read from the inputs (`shape_of(node id)`), or None when an input
        dim disagrees with another of the same symbol or a size is below MIN_SIZE. A place is
        (input node, dim) or (input node, dim, c) for a dim of c times the symbol."""
        sizes = {}
        for name, places in self.sources.items():
            size = _read(shape_of, places[0])
            if size is None or size < MIN_SIZE:
                return None
            for other in places[1:]:
                if _read(shape_of, other) != size:
                    return None
            sizes[name] = size
        return sizes

    def sizes_or_raise(self, shape_of, graph):
        """`sizes`, or SizesDoNotFit naming the program (`graph`: a Graph, or an object with a name)."""
        sizes = self.sizes(shape_of)
        if sizes is None:
            raise SizesDoNotFit(f"{graph.name}: the inputs' sizes do not fit its symbols "
                                f"({self.describe(graph if hasattr(graph, 'node') else None)}; each at least {MIN_SIZE})")
        return sizes

    def renumbered(self, new_id):
        return SymbolTable({s: [(new_id[place[0]],) + tuple(place[1:]) for place in places]
                            for s, places in self.sources.items()}, dict(self.traced))

    @staticmethod
    def of_inputs(graph, missing_ok=False):
        """The table of a graph whose input shapes hold symbols but that has none (a backward
        program the autodiff pass split off): each symbol read where an input dim is c times it.
        None when the graph has no symbolic input; ValueError when a symbol cannot be read."""
        sources, wanted = {}, set()
        for node_id in graph.inputs:
            for dim, size in enumerate(graph.node(node_id).shape):
                if not isinstance(size, SymDim):
                    continue
                wanted.update(size.symbols)
                if len(size.terms) == 1 and len(size.terms[0][0]) == 1:
                    (name,), coefficient = size.terms[0]
                    sources.setdefault(name, []).append((node_id, dim) if coefficient == 1 else
                                                        (node_id, dim, coefficient))
        for data in graph.node_data().values():
            for size in data["shape"]:
                if isinstance(size, SymDim):
                    wanted.update(size.symbols)
        if not wanted:
            return None
        missing = sorted(wanted - set(sources))
        if missing and not missing_ok:
            raise ValueError(f"{graph.name}: no input dim gives the size {', '.join(missing)}")
        return SymbolTable({name: sources[name] for name in sorted(sources)})

    def describe(self, graph=None):
        parts = []
        for name, places in self.sources.items():
            where = ", ".join(f"{'' if len(p) == 2 else f'1/{p[2]} of '}dim {p[1]} of "
                              f"{graph.node(p[0]).name if graph is not None else f'input %{p[0]}'}" for p in places)
            parts.append(f"{name} = {where}")
        return "; ".join(parts)


HINT = 64  # the size every symbol is taken to have where a pass only estimates (a typical batch)


def hint(value):
    """`value` with every symbol at HINT: for cost estimates only, never for correctness."""
    if isinstance(value, SymDim):
        return evaluate(value, {name: HINT for name in value.symbols})
    if isinstance(value, (tuple, list)):
        return type(value)(hint(v) for v in value)
    return value


def provably_at_most(value, limit):
    """`value <= limit` for every size (an int is just compared): how a pass asks "is this
    small?" without specialising on a symbolic size (which is never provably small)."""
    if not isinstance(value, SymDim):
        return value <= limit
    try:
        return value <= limit
    except SymbolicDecision:
        return False


def aligned_up(value, alignment):
    """`value` rounded up to a multiple of `alignment`; for a SymDim, the polynomial with each
    coefficient rounded up (its value is a multiple of `alignment` and at least `value` for
    every size, as every monomial is positive)."""
    if not isinstance(value, SymDim):
        return -(-value // alignment) * alignment
    return SymDim._from({m: -(-c // alignment) * alignment for m, c in value.terms})
