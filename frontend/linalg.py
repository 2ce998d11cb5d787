"""Products of tensors: matmul (with PyTorch's 1-d rules), mm, bmm, mv, dot, outer, einsum,
cross, and the `ember.linalg` functions (norm, svd).

All products bind the one `matmul` contraction primitive (einsum lowers to permute, reshape
and matmul), so the compiler sees every product the same way. As in PyTorch, products do not
promote: operands of two dtypes (float32 @ float64, a float weight applied to int64 input)
raise an error naming both dtypes.
"""
import numpy as np

from ember.ops import PRIMITIVES as P
from ember.ops.registry import OpError, describe
from .dispatch import current_module, spec_of
from .math_ops import mul, promote_operands, sub
from .reductions import sum as reduce_sum, norm as vector_norm_impl
from .shape_ops import unsqueeze, squeeze, reshape, permute, _slice_axis
from .tensor import Tensor


# how PyTorch's messages spell dtypes: its C++ type names ("float != double") and its
# ScalarType names ("got Long and Float")
_CPP_NAMES = {"float32": "float", "float64": "double", "float16": "c10::Half", "int64": "long int",
              "int32": "int", "int16": "short int", "int8": "signed char", "uint8": "unsigned char",
              "bool": "bool"}
_SCALAR_TYPE_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
                      "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}


def cpp_type_name(dtype):
    """float32 -> 'float', as in PyTorch's "expected m1 and m2 to have the same dtype"."""
    return _CPP_NAMES[dtype.name]


def scalar_type_name(dtype):
    """int64 -> 'Long', as in PyTorch's "mat1 and mat2 must have the same dtype"."""
    return _SCALAR_TYPE_NAMES[dtype.name]


def _where(op):
    module = current_module()
    return f"{op} ({module})" if module else op


def check_product_operands(op, a, b):
    """Tensors of one dtype, and not bool (PyTorch's matmul neither promotes nor takes bools)."""
    for position, (name, x) in enumerate((("input", a), ("other", b)), 1):
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}(): argument '{name}' (position {position}) must be Tensor, not "
                            f"{type(x).__name__}")
    if a._data.dtype != b._data.dtype:  # (numpy's dtypes: the check runs on every product)
        raise RuntimeError(f"{_where(op)}: expected m1 and m2 to have the same dtype, but got: "
                           f"{cpp_type_name(a.dtype)} != {cpp_type_name(b.dtype)} "
                           f"({describe(spec_of(a))} and {describe(spec_of(b))})")
    if a._data.dtype.kind == "b":
        raise NotImplementedError(f"{_where(op)}: not implemented for 'Bool' tensors "
                                  f"({describe(spec_of(a))} and {describe(spec_of(b))})")


def matmul(input, other):
    check_product_operands("matmul", input, other)
    a, b = input, other
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"matmul: both arguments need at least 1 dimension, got {a.ndim}D and {b.ndim}D tensors")
    inner_a, inner_b = a._data.shape[-1], b._data.shape[0] if b.ndim == 1 else b._data.shape[-2]
    if inner_a != inner_b:  # checked here so the error names the user's shapes, not unsqueezed ones
        raise OpError("matmul", f"shapes {describe(spec_of(a))} and {describe(spec_of(b))} cannot be "
                                f"multiplied ({inner_a} != {inner_b})").in_module(current_module())
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = unsqueeze(a, 0)
    if squeeze_b:
        b = unsqueeze(b, -1)
    out = P["matmul"].bind(a, b)
    if squeeze_a:
        out = squeeze(out, -2)
    if squeeze_b:
        out = squeeze(out, -1)
    return out


def _need_dims(op, tensor, n, which):
    if tensor.ndim != n:
        where = f"{op} ({current_module()})" if current_module() else op
        raise RuntimeError(f"{where}: {which} must be a {n}D tensor, got shape {list(tensor.shape)}")


def mm(input, mat2):
    check_product_operands("mm", input, mat2)
    _need_dims("mm", input, 2, "self")
    _need_dims("mm", mat2, 2, "mat2")
    return matmul(input, mat2)


def bmm(input, mat2):
    check_product_operands("bmm", input, mat2)
    _need_dims("bmm", input, 3, "batch1")
    _need_dims("bmm", mat2, 3, "batch2")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {list(input.shape)} and {list(mat2.shape)}")
    return matmul(input, mat2)


def mv(input, vec):
    check_product_operands("mv", input, vec)
    _need_dims("mv", input, 2, "self")
    _need_dims("mv", vec, 1, "vec")
    return matmul(input, vec)


def dot(input, other):
    check_product_operands("dot", input, other)
    _need_dims("dot", input, 1, "self")
    _need_dims("dot", other, 1, "other")
    return matmul(input, other)


inner = dot


def outer(input, vec2):
    return mul(unsqueeze(input, 1), unsqueeze(vec2, 0))


ger = outer


def addmm(input, mat1, mat2, beta=1, alpha=1):
    product = mm(mat1, mat2)
    if isinstance(input, Tensor) and input.dtype is not product.dtype:
        raise RuntimeError(f"{_where('addmm')}: self and mat2 must have the same dtype, but got "
                           f"{scalar_type_name(input.dtype)} and {scalar_type_name(mat2.dtype)} "
                           f"(self {describe(spec_of(input))}, mat2 {describe(spec_of(mat2))})")
    return _scaled_sum(input, product, beta, alpha)


def _scaled_sum(input, product, beta, alpha):
    """beta * input + alpha * product; with beta == 0 the input is ignored (its nan and inf
    are not propagated), as torch documents for addmm, baddbmm and addbmm."""
    if alpha != 1:
        product = mul(product, alpha)
    if beta == 0:
        if isinstance(input, Tensor) and input.requires_grad:  # a zero gradient edge, as torch: nan not read
            from .math_ops import where
            from .creation import tensor
            return product + where(tensor(False), input, 0.0)
        return product
    return product + (input if beta == 1 else mul(input, beta))


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * (batch1 @ batch2) over a batch of matrices."""
    return _scaled_sum(input, bmm(batch1, batch2), beta, alpha)


def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * (the sum over the batch of batch1[i] @ batch2[i])."""
    from .reductions import sum as reduce_sum
    return _scaled_sum(input, reduce_sum(bmm(batch1, batch2), dim=0), beta, alpha)


def einsum(equation, *operands):
    """Lowered to permute/reshape/slice and one matmul per pair of operands."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    for i, op in enumerate(operands):
        if not isinstance(op, Tensor):
            raise TypeError(f"einsum(): operand {i} must be a Tensor, got {type(op).__name__}")
        if op.dtype is not operands[0].dtype:
            raise RuntimeError(f"{_where('einsum')}: expected scalar type {scalar_type_name(operands[0].dtype)} but "
                               f"found {scalar_type_name(op.dtype)}: operands must have one dtype, got operand 0 "
                               f"{describe(spec_of(operands[0]))} and operand {i} {describe(spec_of(op))}")
    operands = list(operands)
    terms, output = _parse_einsum(equation.replace(" ", ""), operands)
    for i, (term, op) in enumerate(zip(terms, operands)):
        terms[i], operands[i] = _take_diagonals(term, op)
    term, value = terms[0], operands[0]
    for i in range(1, len(terms)):
        needed_later = output + "".join(terms[i + 1:])
        term, value = _contract_pair(term, value, terms[i], operands[i], needed_later)
    dropped = tuple(i for i, c in enumerate(term) if c not in output)
    if dropped:
        value = reduce_sum(value, dropped)
        term = "".join(c for c in term if c in output)
    return permute(value, [term.index(c) for c in output]) if term != output else value


def _parse_einsum(equation, operands):
    """Operand terms and the output term, with '...' spelled out as unused capital letters
    (aligned from the right, size-1 dims broadcast) and an implicit output made explicit."""
    from .shape_ops import expand
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands):
        raise RuntimeError(f"einsum(): {len(terms)} operand subscripts for {len(operands)} operands")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation]
    counts = [op.ndim - len(t.replace("...", "")) if "..." in t else 0 for t, op in zip(terms, operands)]
    broadcast = "".join(spare[:max(counts, default=0)])
    terms = [t.replace("...", broadcast[len(broadcast) - k:]) for t, k in zip(terms, counts)]
    for given, term, op in zip(inputs.split(","), terms, operands):
        if len(term) != op.ndim or not term.isalpha() and term:
            raise RuntimeError(f"einsum(): subscript '{given}' does not match an operand of shape "
                               f"{list(op.shape)}")
    if arrow:
        output = output.replace("...", broadcast)
    else:  # the letters used once, in alphabetical order, after the broadcast dims
        letters = "".join(terms)
        output = broadcast + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in broadcast))
    seen = {}
    for i, (term, op) in enumerate(zip(terms, operands)):
        for c, d in zip(term, op.shape):
            if c not in broadcast and seen.setdefault(c, (d, i))[0] != d:
                raise RuntimeError(f"einsum(): subscript '{c}' has size {seen[c][0]} in operand {seen[c][1]} "
                                   f"{list(operands[seen[c][1]].shape)} but size {d} in operand {i} {list(op.shape)}")
    sizes = {c: d for t, op in zip(terms, operands) for c, d in zip(t, op.shape) if c in broadcast and d != 1}
    for i, (term, op) in enumerate(zip(terms, operands)):
        target = tuple(sizes.get(c, d) if c in broadcast else d for c, d in zip(term, op.shape))
        if target != tuple(op.shape):
            operands[i] = expand(op, target)
    return terms, output


def _take_diagonals(term, value):
    """A letter repeated within one operand ('ii->i', 'ii->') takes the diagonal: the
    repeated dims are moved last, flattened, and sliced with a stride of n^(k-1)+...+n+1."""
    while len(set(term)) != len(term):
        letter = next(c for c in term if term.count(c) > 1)
        dims = [i for i, c in enumerate(term) if c == letter]
        n = value.shape[dims[0]]  # _parse_einsum checked the repeated dims agree
        rest = [i for i in range(len(term)) if i not in dims]
        value = reshape(permute(value, rest + dims), tuple(value.shape[i] for i in rest) + (n ** len(dims),))
        stride = sum(n ** k for k in range(len(dims)))
        value = _slice_axis(value, value.ndim - 1, 0, n ** len(dims), stride) if n > 1 else value
        term = "".join(term[i] for i in rest) + letter
    return term, value


def _contract_pair(term_a, a, term_b, b, needed_later):
    """Contract two operands: shared letters not needed later are summed by a batched matmul."""
    sizes = {c: d for t, v in ((term_a, a), (term_b, b)) for c, d in zip(t, v.shape)}
    batch = [c for c in term_a if c in term_b and c in needed_later]
    contract = [c for c in term_a if c in term_b and c not in needed_later]
    only_a = [c for c in term_a if c not in term_b]
    only_b = [c for c in term_b if c not in term_a]

    def arrange(term, value, middle, last):
        value = permute(value, [term.index(c) for c in batch + middle + last])
        return reshape(value, tuple(sizes[c] for c in batch) + (_prod(sizes, middle), _prod(sizes, last)))

    product = P["matmul"].bind(arrange(term_a, a, only_a, contract), arrange(term_b, b, contract, only_b))
    value = reshape(product, tuple(sizes[c] for c in batch + only_a + only_b))
    return "".join(batch + only_a + only_b), value


def _prod(sizes, letters):
    n = 1
    for c in letters:
        n *= sizes[c]
    return n


def cross(input, other, dim=None):
    a, b = promote_operands((input, other))
    if dim is None:
        dim = next(i for i, d in enumerate(a.shape) if d == 3)
    from .shape_ops import unbind, stack
    a0, a1, a2 = unbind(a, dim)
    b0, b1, b2 = unbind(b, dim)
    return stack([sub(mul(a1, b2), mul(a2, b1)), sub(mul(a2, b0), mul(a0, b2)), sub(mul(a0, b1), mul(a1, b0))], dim)


class linalg:
    """`ember.linalg`: the norms and decompositions tutorials use."""

    @staticmethod
    def norm(input, ord=None, dim=None, keepdim=False, dtype=None):
        if ord is None:
            ord = 2 if (dim is None and input.ndim == 1) or isinstance(dim, int) else "fro"
        return vector_norm_impl(input, ord, dim, keepdim, dtype)

    @staticmethod
    def vector_norm(input, ord=2, dim=None, keepdim=False, dtype=None):
        return vector_norm_impl(input, ord, dim, keepdim, dtype)

    @staticmethod
    def svd(A, full_matrices=True):
        """Forward only (numpy): the result does not carry gradients."""
        u, s, vh = np.linalg.svd(A._data, full_matrices=full_matrices)
        return tuple(Tensor._wrap(np.ascontiguousarray(m)) for m in (u, s, vh))

    @staticmethod
    def inv(A):
        return Tensor._wrap(np.linalg.inv(A._data))

    @staticmethod
    def det(A):
        return Tensor._wrap(np.asarray(np.linalg.det(A._data)))


def svd(input, some=True, compute_uv=True):
    """PyTorch's legacy svd: returns U, S, V (not V^H); forward only."""
    u, s, vh = np.linalg.svd(input._data, full_matrices=not some)
    return Tensor._wrap(u), Tensor._wrap(s), Tensor._wrap(np.ascontiguousarray(np.swapaxes(vh, -1, -2)))
