"""Loop-nest kernel descriptions: what lowering (compiler/lowering.py) produces and every
target's code generator (compiler/llvm/kernels.py and the targets built on it) consumes.

A `Kernel` is one fused group: statements (loops, accumulators, stores, bounds checks,
matrix-multiply calls, numpy fallbacks) over numbered buffer slots. Values are `Expr` trees:
scalar math on float/int/bool values, plus int64 index arithmetic that simplifies as it is
built (affine sums, floor division and modulo by constants with range analysis), so chains
of movement ops become plain strided loads that LLVM's vectoriser understands.

Elementwise primitives write their scalar expressions in this vocabulary (`ScalarBuilder`,
beside each primitive in ember/ops); a target's code generator implements the core ops
(`CORE_OPS`) and supplies the float math functions (`MATH_FUNCTIONS`) from its own tables.
"""
import math

from ember.ir.symbols import HINT, MIN_SIZE, SymDim, hint

INDEX = "int64"
FLOATS = ("float32", "float64", "float16", "bfloat16")
COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")


class Expr:
    """One scalar value. `op` says what it is ("const", "var", "acc", "load", "affine",
    "floordiv", "mod", "cast", "select" or a scalar op name such as "exp" or "add"); `attr`
    holds its static part (the constant, the var's (name, extent), the load's slot, the
    affine coefficients, the divisor); `lo`/`hi` bound integer values when known."""

    __slots__ = ("op", "args", "attr", "dtype", "lo", "hi", "_key", "_hash", "_text")

    def __init__(self, op, args, attr, dtype, lo=None, hi=None):
        self.op, self.args, self.attr, self.dtype = op, tuple(args), attr, dtype
        self.lo, self.hi = lo, hi
        attr_key = _const_key(attr) if op == "const" else attr
        self._key = (op, attr_key, dtype, self.args)
        self._hash = hash(self._key)
        self._text = None

    def __eq__(self, other):
        return self is other or (isinstance(other, Expr) and self._hash == other._hash and self._key == other._key)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return self.text

    @property
    def is_const(self):
        return self.op == "const"

    @property
    def text(self):
        if self._text is None:
            self._text = _render(self)
        return self._text

    def walk(self):
        """This expression and every subexpression, each once."""
        seen, stack = set(), [self]
        while stack:
            e = stack.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            yield e
            stack.extend(e.args)


def _const_key(value):
    if isinstance(value, float):
        return ("f", repr(value))  # keeps -0.0 and nan distinct and hashable
    return (type(value).__name__, value)


def _render(e):
    if e.op == "const":
        return repr(e.attr)
    if e.op == "var":
        return e.attr[0]
    if e.op == "size":
        return e.attr
    if e.op == "imul":
        return f"{e.args[0].text}*{e.args[1].text}"
    if e.op in ("floordiv_by", "mod_by"):
        return f"({e.args[0].text} {'//' if e.op == 'floordiv_by' else '%'} {e.args[1].text})"
    if e.op == "acc":
        return e.attr
    if e.op == "load":
        return f"s{e.attr}[{e.args[0].text}]"
    if e.op == "affine":
        coefs, const = e.attr
        parts = [a.text if c == 1 else f"{c}*{a.text}" for a, c in zip(e.args, coefs)]
        if const:
            parts.append(str(const))
        return "(" + " + ".join(parts) + ")"
    if e.op == "floordiv":
        return f"({e.args[0].text} // {e.attr})"
    if e.op == "mod":
        return f"({e.args[0].text} % {e.attr})"
    if e.op == "cast":
        return f"{e.dtype}({e.args[0].text})"
    if e.op == "select":
        c, a, b = e.args
        return f"({c.text} ? {a.text} : {b.text})"
    return f"{e.op}({', '.join(a.text for a in e.args)})"


# ----------------------------------------------------------------------------- leaves

def const(value, dtype):
    if dtype == "bool":
        value = bool(value)
    elif dtype in FLOATS:
        value = float(value)
    else:
        value = int(value)
    bound = int(value) if dtype in ("int8", "uint8", "int16", "int32", "int64", "bool") else None
    return Expr("const", (), value, dtype, bound, bound)


def index(value):
    """An int64 constant; a symbolic size (SymDim) gives its expression over `size` leaves."""
    if isinstance(value, SymDim):
        return size_of(value)
    return const(value, INDEX)


def var(name, extent):
    """A loop variable running over 0..extent-1 (`extent` an int, or a symbolic size: a SymDim
    or its Expr, read when the program runs)."""
    if isinstance(extent, (SymDim, Expr)):
        extent = size_of(extent)
        return Expr("var", (), (name, extent), INDEX, 0, None if extent.hi is None else extent.hi - 1)
    return Expr("var", (), (name, int(extent)), INDEX, 0, int(extent) - 1)


def size(symbol):
    """The value of size symbol `symbol` (ember/ir/symbols.py) in the running program (>= MIN_SIZE)."""
    return Expr("size", (), symbol, INDEX, MIN_SIZE, None)


def size_of(value):
    """An int, SymDim or index Expr as an index Expr: a SymDim's polynomial over `size` leaves."""
    if isinstance(value, Expr):
        return value
    if not isinstance(value, SymDim):
        return index(value)
    terms, constant = {}, 0
    for monomial, coefficient in value.terms:
        if not monomial:
            constant += coefficient
            continue
        atom = size(monomial[0])
        for name in monomial[1:]:
            atom = _product(atom, size(name))
        terms[atom] = terms.get(atom, 0) + coefficient
    return affine(terms, constant)


def times(a, b):
    """a * b for extents (ints or index Exprs)."""
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    return imul(size_of(a), b)


def estimate(value):
    """An int, or an index Expr with every size symbol at HINT (ember/ir/symbols.py): for
    cost heuristics (is this loop worth threads?), never for correctness."""
    if isinstance(value, int):
        return value
    if isinstance(value, SymDim):
        return hint(value)
    if value.op == "const":
        return value.attr
    if value.op == "size":
        return HINT
    if value.op == "imul":
        return estimate(value.args[0]) * estimate(value.args[1])
    if value.op == "affine":
        coefs, constant = value.attr
        return constant + sum(c * estimate(a) for a, c in zip(value.args, coefs))
    if value.op == "var":
        return estimate(value.attr[1]) - 1
    raise ValueError(f"cannot estimate the index expression {value.text}")


def _product(a, b):
    """a * b for two non-constant index atoms (a symbolic stride times an index)."""
    a, b = sorted((a, b), key=lambda e: e.text)
    lo = a.lo * b.lo if a.lo is not None and b.lo is not None and a.lo >= 0 and b.lo >= 0 else None
    hi = a.hi * b.hi if lo is not None and a.hi is not None and b.hi is not None else None
    return Expr("imul", (a, b), None, INDEX, lo, hi)


def acc(name, dtype):
    """The current value of accumulator `name`."""
    return Expr("acc", (), name, dtype)


def load(slot, offset, dtype, lo=None, hi=None):
    """Element `offset` of buffer slot `slot` (the bounds describe the loaded value)."""
    return Expr("load", (offset,), slot, dtype, lo, hi)


# ----------------------------------------------------------------------------- index arithmetic

def terms_of(e):
    """({atom: coefficient}, constant) with e == sum(c * atom) + constant."""
    if e.op == "affine":
        coefs, constant = e.attr
        return dict(zip(e.args, coefs)), constant
    if e.op == "const":
        return {}, e.attr
    return {e: 1}, 0


_AFFINE = {}  # (terms, constant) -> affine's result, within one kernel's lowering (see
# forget_index_arithmetic): lowering builds the same index expressions again and again


def forget_index_arithmetic():
    """Empty affine's memo. Exprs equal as keys may differ in their bounds (a load's value range),
    which affine's simplifications read: the memo holds only while the kernel's slots mean one thing."""
    _AFFINE.clear()


def affine(terms, constant=0):
    """sum(c * atom for atom, c in terms.items()) + constant, normalised."""
    key = (tuple(terms.items()), constant)
    found = _AFFINE.get(key)
    if found is None:
        found = _AFFINE[key] = _affine(terms, constant)
    return found


def _affine(terms, constant):
    flat, constant = {}, int(constant)
    for atom, c in terms.items():
        inner, k = terms_of(atom)
        constant += c * k
        for a, d in inner.items():
            flat[a] = flat.get(a, 0) + c * d
    flat = {a: c for a, c in flat.items() if c}
    flat, extra = _merge_div_mod_pairs(flat)
    constant += extra
    if not flat:
        return index(constant)
    if len(flat) == 1 and constant == 0:
        (atom, c), = flat.items()
        if c == 1:
            return atom
    atoms = sorted(flat, key=lambda a: a.text)
    coefs = tuple(flat[a] for a in atoms)
    lo = hi = constant
    for a, c in zip(atoms, coefs):
        if a.lo is None or a.hi is None:
            lo = hi = None
            break
        lo += min(c * a.lo, c * a.hi)
        hi += max(c * a.lo, c * a.hi)
    return Expr("affine", atoms, (coefs, constant), INDEX, lo, hi)


def _merge_div_mod_pairs(flat):
    """m*c*(x // m) + c*(x % m) is c*x: what a reshape's split undoes when another merges
    the dims back. Returns (terms, constant to add)."""
    extra = 0
    changed = True
    while changed:
        changed = False
        for atom, c in list(flat.items()):
            if atom.op == "mod_by":  # d*(x // d) + (x % d) is x for a symbolic d too
                x, d = atom.args
                partner = _product(Expr("floordiv_by", (x, d), None, INDEX), d)
                found = next((p for p in flat if p == partner or (p.op == "imul" and set(p.args) == set(partner.args))),
                             None)
                if found is None or flat.get(found) != c:
                    continue
                del flat[atom], flat[found]
                flat, extra, changed = _add_terms(flat, extra, x, c)
                break
            if atom.op != "mod":
                continue
            m, x = atom.attr, atom.args[0]
            partner = ifloordiv(x, m)  # simplified, so (x // a) // b finds x // (a*b)
            if partner.op != "floordiv" or flat.get(partner) != c * m:
                continue
            del flat[atom], flat[partner]
            flat, extra, changed = _add_terms(flat, extra, x, c)
            break
    return flat, extra


def _add_terms(flat, extra, x, c):
    """(flat + c*x's terms, extra + c*x's constant, True): a merged div/mod pair replaced by c*x."""
    inner, k = terms_of(x)
    for a, v in inner.items():
        flat[a] = flat.get(a, 0) + c * v
    return {a: v for a, v in flat.items() if v}, extra + c * k, True


def iadd(*es):
    terms, constant = {}, 0
    for e in es:
        if isinstance(e, SymDim):
            e = size_of(e)
        if isinstance(e, int):
            constant += e
            continue
        inner, k = terms_of(e)
        constant += k
        for a, c in inner.items():
            terms[a] = terms.get(a, 0) + c
    return affine(terms, constant)


def imul(e, c):
    if isinstance(e, SymDim):
        e = size_of(e)
    if isinstance(c, (SymDim, Expr)):
        c = size_of(c)
        if c.is_const:
            c = c.attr
        else:  # a symbolic factor: (sum a_i x_i + k) * (sum b_j y_j + m), term by term
            if isinstance(e, int):
                e = index(e)
            e_terms, e_const = terms_of(e)
            c_terms, c_const = terms_of(c)
            out = {}
            for a, v in e_terms.items():
                for b, w in c_terms.items():
                    atom = _product(a, b)
                    out[atom] = out.get(atom, 0) + v * w
                if c_const:
                    out[a] = out.get(a, 0) + v * c_const
            for b, w in c_terms.items():
                if e_const:
                    out[b] = out.get(b, 0) + e_const * w
            return affine(out, e_const * c_const)
    if isinstance(e, int):
        return index(e * c)
    terms, k = terms_of(e)
    return affine({a: v * c for a, v in terms.items()}, k * c)


def isub(a, b):
    return iadd(a, imul(b, -1))


def _split(e, c):
    """e = c*Q + R: (Q, R) with R's constant in [0, c) and only the terms c does not divide."""
    terms, k = terms_of(e)
    q_terms = {a: v // c for a, v in terms.items() if v % c == 0}
    r_terms = {a: v for a, v in terms.items() if v % c}
    kq, kr = divmod(k, c)
    return affine(q_terms, kq), affine(r_terms, kr)


def ifloordiv(e, c):
    """Floor division by a positive constant (or a symbolic size: exact where it divides)."""
    if isinstance(c, (SymDim, Expr)):
        return _divide_by_size(e, size_of(c), "floordiv")
    c = int(c)
    if c == 1:
        return e
    if e.is_const:
        return index(e.attr // c)
    q, r = _split(e, c)
    if r.lo is not None and r.hi is not None and r.lo // c == r.hi // c:
        return iadd(q, r.lo // c)
    terms, k = terms_of(r)
    g = math.gcd(c, k, *terms.values())
    if g > 1:
        r, c = affine({a: v // g for a, v in terms.items()}, k // g), c // g
    if r.op == "floordiv":  # (x // a) // b == x // (a*b)
        return iadd(q, ifloordiv(r.args[0], r.attr * c))
    coarse = _coarse_part(r, c)
    if coarse is not None:  # r = g*Q + R with 0 <= R < g and g | c: r // c == Q // (c/g)
        g, q_part, _ = coarse
        return iadd(q, ifloordiv(q_part, c // g))
    lo = r.lo // c if r.lo is not None else None
    hi = r.hi // c if r.hi is not None else None
    return iadd(q, Expr("floordiv", (r,), c, INDEX, lo, hi))


def imod(e, c):
    """Floor modulo by a positive constant (result in [0, c)), or by a symbolic size."""
    if isinstance(c, (SymDim, Expr)):
        return _divide_by_size(e, size_of(c), "mod")
    c = int(c)
    if c == 1:
        return index(0)
    if e.is_const:
        return index(e.attr % c)
    _, r = _split(e, c)
    if r.lo is not None and r.hi is not None and r.lo // c == r.hi // c:
        return iadd(r, -c * (r.lo // c))
    coarse = _coarse_part(r, c)
    if coarse is not None:  # r = g*Q + R with 0 <= R < g and g | c: r % c == g*(Q % (c/g)) + R
        g, q_part, r_part = coarse
        return iadd(imul(imod(q_part, c // g), g), r_part)
    return Expr("mod", (r,), c, INDEX, 0, c - 1)


def _coarse_part(e, c):
    """(g, Q, R) with e = g*Q + R, 1 < g < c dividing c and R provably in [0, g): the index of a
    row-major flatten (i + 512*j) split back at a multiple of its row (// 32768), else None."""
    terms, k = terms_of(e)
    for g in sorted({abs(v) for v in terms.values() if abs(v) > 1 and c % abs(v) == 0}, reverse=True):
        kq, kr = divmod(k, g)
        rest = affine({a: v for a, v in terms.items() if v % g}, kr)
        if rest.lo is not None and rest.hi is not None and rest.lo >= 0 and rest.hi < g:
            return g, affine({a: v // g for a, v in terms.items() if v % g == 0}, kq), rest
    return None


def _divide_by_size(e, d, how):
    """e // d or e % d for a symbolic d >= 1: the terms that are multiples of d's one atom
    go to the quotient when the rest is provably in [0, d); else a division at run time."""
    if d.is_const:
        return ifloordiv(e, d.attr) if how == "floordiv" else imod(e, d.attr)
    d_terms, d_const = terms_of(d)
    if len(d_terms) == 1 and not d_const:
        (atom, c), = d_terms.items()
        if c > 1:  # e // (c*a) = (e // c) // a;  e % (c*a) = c*((e // c) % a) + e % c
            inner = _divide_by_size(ifloordiv(e, c), atom, how)
            return inner if how == "floordiv" else iadd(imul(inner, c), imod(e, c))
    e_terms, e_const = terms_of(e)
    quotient, rest = {}, {}
    for a, v in e_terms.items():
        factor = _without_factor(a, d)
        if factor is not None:
            quotient[factor] = quotient.get(factor, 0) + v
        else:
            rest[a] = v
    remainder = affine(rest, e_const)
    if quotient and remainder.lo is not None and remainder.lo >= 0 and _below(remainder, d):
        return affine(quotient) if how == "floordiv" else remainder
    op = "floordiv_by" if how == "floordiv" else "mod_by"
    lo = 0 if e.lo is not None and e.lo >= 0 else None
    hi = None
    if how == "floordiv" and lo is not None and e.op == "var" and not isinstance(e.attr[1], int):
        extent_terms, extent_const = terms_of(e.attr[1])
        if extent_terms == {d: extent_terms.get(d)} and not extent_const:  # i in 0..k*d: i // d < k
            hi = extent_terms[d] - 1
    elif how == "mod" and lo is not None and d.hi is not None:
        hi = d.hi - 1
    return Expr(op, (e, d), None, INDEX, lo, hi)


def _without_factor(atom, d):
    """atom / d when d (one atom, e.g. a size) is a factor of the product `atom`, else None."""
    if atom == d:
        return index(1)
    if atom.op == "imul":
        a, b = atom.args
        if a == d:
            return b
        if b == d:
            return a
        for one, other in ((a, b), (b, a)):
            inner = _without_factor(one, d)
            if inner is not None:
                return _product(inner, other) if not inner.is_const else other
    return None


def _below(e, d):
    """Whether 0 <= e < d for every size: e's upper bound is below d's least value, or e is a
    loop variable running over 0..d-1."""
    if e.is_const:
        return d.lo is not None and e.attr < d.lo
    if e.hi is not None and d.lo is not None and e.hi < d.lo:
        return True
    return e.op == "var" and isinstance(e.attr[1], Expr) and e.attr[1] == d


def imin(a, b):
    if a.hi is not None and b.lo is not None and a.hi <= b.lo:
        return a
    if b.hi is not None and a.lo is not None and b.hi <= a.lo:
        return b
    lo = min(a.lo, b.lo) if a.lo is not None and b.lo is not None else None
    hi = min(x for x in (a.hi, b.hi) if x is not None) if (a.hi, b.hi) != (None, None) else None
    return Expr("minimum", (a, b), None, INDEX, lo, hi)


def imax(a, b):
    if a.lo is not None and b.hi is not None and a.lo >= b.hi:
        return a
    if b.lo is not None and a.hi is not None and b.lo >= a.hi:
        return b
    lo = max(x for x in (a.lo, b.lo) if x is not None) if (a.lo, b.lo) != (None, None) else None
    hi = max(a.hi, b.hi) if a.hi is not None and b.hi is not None else None
    return Expr("maximum", (a, b), None, INDEX, lo, hi)


def clamp(e, lo, hi):
    """e clamped into [lo, hi] (ints or symbolic sizes): keeps guarded loads in bounds."""
    return imin(imax(e, size_of(lo)), size_of(hi))


def icompare(op, a, b):
    """An int64 comparison, decided statically when the bounds allow."""
    a, b = size_of(a), size_of(b)  # (ints and symbolic sizes as index Exprs)
    known = _decide(op, a, b)
    if known is not None:
        return const(known, "bool")
    return Expr(op, (a, b), None, "bool")


def _decide(op, a, b):
    if None in (a.lo, a.hi, b.lo, b.hi):
        return None
    if op == "lt":
        return True if a.hi < b.lo else False if a.lo >= b.hi else None
    if op == "le":
        return True if a.hi <= b.lo else False if a.lo > b.hi else None
    if op == "gt":
        return _decide("lt", b, a)
    if op == "ge":
        return _decide("le", b, a)
    if op == "eq":
        return True if a.lo == a.hi == b.lo == b.hi else False if a.hi < b.lo or b.hi < a.lo else None
    if op == "ne":
        known = _decide("eq", a, b)
        return None if known is None else not known
    return None


def logical_and(*conds):
    kept = []
    for c in conds:
        if c.is_const:
            if not c.attr:
                return const(False, "bool")
            continue
        if c not in kept:
            kept.append(c)
    if not kept:
        return const(True, "bool")
    result = kept[0]
    for c in kept[1:]:
        result = Expr("logical_and", (result, c), None, "bool")
    return result


# ----------------------------------------------------------------------------- scalar values

def apply(op, *args, dtype=None):
    """The scalar op `op` (an elementwise primitive's name) on `args`; comparisons and
    logical ops give bool, everything else the first operand's dtype unless `dtype` says."""
    if dtype is None:
        if op in COMPARISONS or op.startswith("logical_"):
            dtype = "bool"
        else:
            dtype = args[0].dtype
    return Expr(op, args, None, dtype)


def cast(e, dtype):
    if e.dtype == dtype:
        return e
    if e.is_const:
        return const(e.attr, dtype)
    return Expr("cast", (e,), None, dtype, e.lo, e.hi)


def select(cond, a, b):
    if cond.is_const:
        return a if cond.attr else b
    if a == b:
        return a
    lo = min(a.lo, b.lo) if a.lo is not None and b.lo is not None else None
    hi = max(a.hi, b.hi) if a.hi is not None and b.hi is not None else None
    return Expr("select", (cond, a, b), None, a.dtype, lo, hi)


def vars_in(e):
    """The loop-variable names an expression depends on."""
    return {x.attr[0] for x in e.walk() if x.op == "var"}


def substitute(e, mapping):
    """`e` with subexpressions replaced per `mapping` {Expr: Expr}, re-simplified."""
    memo = {}

    def go(x):
        if x in mapping:
            return mapping[x]
        if not x.args:
            return x
        key = id(x)
        if key in memo:
            return memo[key]
        args = tuple(go(a) for a in x.args)
        memo[key] = result = x if all(a is b for a, b in zip(args, x.args)) else rebuild(x, args)
        return result

    return go(e)


def rebuild(e, args):
    """`e` with new operands, through the simplifying constructors."""
    if e.op == "affine":
        coefs, constant = e.attr
        return affine(dict(_accumulate(zip(args, coefs))), constant)
    if e.op == "floordiv":
        return ifloordiv(args[0], e.attr)
    if e.op == "mod":
        return imod(args[0], e.attr)
    if e.op == "load":
        return load(e.attr, args[0], e.dtype, e.lo, e.hi)
    if e.op == "imul":
        return imul(args[0], args[1])
    if e.op in ("floordiv_by", "mod_by"):
        return ifloordiv(args[0], args[1]) if e.op == "floordiv_by" else imod(args[0], args[1])
    if e.op == "cast":
        return cast(args[0], e.dtype)
    if e.op == "select":
        return select(*args)
    if e.dtype == INDEX and e.op == "minimum":
        return imin(*args)
    if e.dtype == INDEX and e.op == "maximum":
        return imax(*args)
    if e.op in COMPARISONS and args[0].dtype == INDEX:
        return icompare(e.op, *args)
    if e.op == "logical_and":
        return logical_and(*args)
    return Expr(e.op, args, e.attr, e.dtype, e.lo, e.hi)


def _accumulate(pairs):
    out = {}
    for a, c in pairs:
        out[a] = out.get(a, 0) + c
    return out.items()


# ----------------------------------------------------------------------------- statements
# (compiler/loop_statements.py: loops, stores, calls and the Kernel; every stage reaches them as L.Loop, ...)
from .loop_statements import (  # noqa: E402,F401  (after the expressions, which the statements hold)
    CONV_KINDS, DIRECT_SUFFIX, Callback, Check, ConvCall, Declare, Gemm, Kernel, Loop, Slot, Store, Update, View,
    describe_statements, statement_exprs, walk_statements)
# (compiler/rule_vocabulary.py: what lowering rules write their values in)
from .rule_vocabulary import (  # noqa: E402,F401
    CORE_OPS, MATH_FUNCTIONS, STRUCTURE_OPS, ScalarBuilder, operand_kind, scalar_ops)
