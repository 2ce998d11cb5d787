"""Differential oracle for views, in-place ops and autograd (issue 10): generated programs run
in ember (eager, and compiled with each backend) and in a numpy reference model of PyTorch.

A `Program` is a short straight-line PyTorch-style function over views and in-place ops. It is
rendered as Python source with `T` standing for the library and executed unchanged against
ember, PyTorch (tests/torch_oracle.py only) and `MODEL`, the numpy reference defined here, as a
plain function, a closure over a dict or an nn.Module; its inputs are arguments (some of them
views of another argument), closure state, parameters and buffers. It is called CALLS times
with fresh argument values. `programs()` is the hypothesis strategy, `run_program` the runner,
`compare` the check (values, dtypes, requires_grad, the caller's tensors after each call,
gradients, errors and their kind, and, after the last call, which tensors the returned ones
alias), `report` the failure message, `minimize` shrinks a failing program.

The reference model follows PyTorch's documented semantics and its autograd internals:
- storage: a view is a numpy `as_strided` window on its base's buffer, so aliasing is exact;
  base and views share one version counter (`.data` starts a new one, `.detach()` shares it).
- views record their root base and a creation mode (default, no_grad, multi-output for
  unbind/split/chunk); reading a no_grad or multi-output view after its base changed, and
  in-place on one with grad recording, raise (PyTorch's handle_view_on_rebase).
- in-place ops check, in PyTorch's order: leaf / view of leaf / view creation mode (only when
  grad mode is on and an operand requires grad), then internal overlap (expanded targets) and
  partial overlap between target and operand (at::get_overlap_status). A recorded in-place op
  on a view rebases the base's history (CopySlices); other views regenerate theirs lazily.
- saved tensors (derivatives.yaml): mul and mm save the other operand of each input that
  needs grad, sigmoid/exp/relu save their result (the in-place forms too), clamp saves its
  input; add, sub, sum, copy_, fill_, clamp_ and masked_fill_ save nothing that can change.
  backward checks every saved tensor's version on the nodes it reaches.
- gradients are central finite differences of the loss in float64 with every value PyTorch
  cuts from autograd frozen at the value of an unperturbed recording run: reads of tensors
  that do not require grad or happen under no_grad, comparison results, the kink masks of
  relu and clamp, and the change made by an in-place op that autograd does not record (the
  written region keeps its own perturbation plus the recorded change). They are checked
  along random directions; `full_gradients` gives them elementwise for messages.
Programs the model cannot define (an in-place op whose result would depend on the order of
overlapping reads and writes, two autograd histories on one storage, persistent state that
would carry autograd history into the next call) are never generated (`Unsupported`).
"""
import hashlib
import itertools
import linecache
import math
import re
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from hypothesis import strategies as st

CALLS = 3  # every program is called this often: the first call traces, the later ones run compiled code
FD_STEP = 1e-6
FD_DIRECTIONS = 3
BOUND_LIMIT = 100.0  # no generated value may exceed this in magnitude (float32 stays accurate)
EXP_BOUND = 3.0  # exp only of values bounded by this

ERROR_KINDS = {
    # kind: phrase of PyTorch's message (ember's messages are classified by the same phrases)
    "view_of_leaf_inplace": r"view of a leaf variable",
    "leaf_inplace": r"leaf variable .*in-?place",
    "multi_output_view": r"function that returns multiple views",
    "no_grad_view": r"created in no_grad mode",
    "internal_overlap": r"more than one element of the written-to tensor",
    "partial_overlap": r"some elements of the input tensor and the written-to tensor",
    "view_incompatible": r"view size is not compatible",
    "saved_modified": r"modified by an inplace operation",
    "no_grad_fn": r"does not require grad and does not have a grad_fn",
}


def classify_error(exc):
    """The ERROR_KINDS name of an exception raised by a program, or 'other:<Type>'."""
    kind = getattr(exc, "kind", None)
    if kind is not None:
        return kind
    text = str(exc).lower()
    for name, pattern in ERROR_KINDS.items():
        if re.search(pattern, text):
            return name
    return f"other:{type(exc).__name__}"


# ============================================================================ reference model
class ModelError(RuntimeError):
    """An error PyTorch raises for the program; `kind` is one of ERROR_KINDS."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


class Unsupported(Exception):
    """The reference cannot define this program; the generator never emits it."""


class _Mode:
    """The reference's grad mode and, while computing finite differences, its tape."""
    grad = True
    tape = None


MODE = _Mode()
REACHED = "reached by backward"  # the model's .grad of a leaf that backward reached


class _Tape:
    """Values PyTorch cuts from autograd, recorded in the unperturbed run and replayed after."""

    def __init__(self):
        self.recording, self.values, self.position, self.loss = True, [], 0, None

    def frozen(self, value):
        if self.recording:
            self.values.append(value)
            return value
        value = self.values[self.position]
        self.position += 1
        return value

    def replay(self):
        self.recording, self.position, self.loss = False, 0, None


def _frozen(value):
    return value if MODE.tape is None else MODE.tape.frozen(value)


class _Storage:
    def __init__(self, data, bound):
        self.data, self.bound = data, bound
        self.roots = []  # tensors over this storage that are not autograd views (base, detach, .data)


class _Version:
    def __init__(self):
        self.value = 0


VIEW_NODES = {"AsStridedBackward0", "SliceBackward0", "TBackward0", "PermuteBackward0", "ViewBackward0",
              "UnsqueezeBackward0", "SqueezeBackward0", "ExpandBackward0", "NarrowBackward0", "SplitBackward0",
              "UnbindBackward0"}


class _Node:
    """An autograd node: where gradients go next and which tensors' versions it saved.
    `writes_overlapping_view`: a CopySlices whose view is expanded; its backward copies the
    gradient into that view and raises like any write to overlapping memory."""
    created = itertools.count()

    def __init__(self, name, next_nodes=(), saved=(), leaf=None):
        self.name, self.leaf = name, leaf
        self.next = [n for n in next_nodes if n is not None]
        self.saved = list(saved)
        self.sequence = next(_Node.created)
        self.writes_overlapping_view = False
        self.view = name in VIEW_NODES


class DType:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"model.{self.name}"

    def __eq__(self, other):
        return isinstance(other, DType) and other.name == self.name

    def __hash__(self):
        return hash(self.name)


def _storage_dtype(name):
    if name == "bool":
        return np.bool_
    return np.float64 if MODE.tape is not None else np.dtype(name)


def _result_dtype(tensors):
    """PyTorch's type promotion among float tensors: dimensioned tensors outrank 0-d ones."""
    ranked = [t for t in tensors if t.ndim > 0] or list(tensors)
    return "float64" if any(t._dtype == "float64" for t in ranked) else "float32"


def _contiguous_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _is_contiguous(shape, strides):
    expected = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


def _non_overlapping_and_dense(shape, strides):
    """at::TensorImpl::compute_non_overlapping_and_dense."""
    if len(shape) == 1:
        return shape[0] < 2 or strides[0] == 1
    order = sorted(range(len(shape)), key=lambda i: (shape[i] < 2, strides[i] if shape[i] >= 2 else 0))
    required = 1
    for i in order:
        if shape[i] < 2:
            return True
        if strides[i] != required:
            return False
        required *= shape[i]
    return True


def _compute_view_strides(shape, strides, new_shape):
    """at::detail::computeStride: strides of a view of `new_shape`, or None when impossible."""
    if len(shape) == 0:
        return [1] * len(new_shape)
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base_stride = strides[-1]
    tensor_numel, view_numel = 1, 1
    for tensor_d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[tensor_d]
        if tensor_d == 0 or (shape[tensor_d - 1] != 1 and strides[tensor_d - 1] != tensor_numel * chunk_base_stride):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base_stride
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk_base_stride = strides[tensor_d - 1]
                tensor_numel, view_numel = 1, 1
    return new_strides if view_d == -1 else None


def _resolve_shape(sizes, numel, op):
    sizes = list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else list(sizes)
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        sizes[sizes.index(-1)] = numel // known if known else 0
    if math.prod(sizes) != numel:
        raise ModelError("other:RuntimeError", f"{op}: shape {sizes} is invalid for input of size {numel}")
    return tuple(sizes)


def _addresses(t):
    """The storage offsets of t's elements (small tensors only)."""
    index = np.full(t._shape, t._offset, dtype=np.int64)
    for axis, (size, stride) in enumerate(zip(t._shape, t._strides)):
        shape = [1] * len(t._shape)
        shape[axis] = size
        index = index + (np.arange(size) * stride).reshape(shape)
    return index.reshape(-1)


def _has_internal_overlap(t):
    """at::has_internal_overlap == YES: a stride-0 dimension of size > 1."""
    return not _non_overlapping_and_dense(t._shape, t._strides) and any(
        stride == 0 and size > 1 for size, stride in zip(t._shape, t._strides))


def _internal_overlap_error():
    return ModelError("internal_overlap", "unsupported operation: more than one element of the written-to tensor "
                      "refers to a single memory location. Please clone() the tensor before performing the "
                      "operation.")


def _check_internal_overlap(t):
    if _has_internal_overlap(t):
        raise _internal_overlap_error()


def _iterator_strides(shape, operands):
    """The strides TensorIterator gives the output of an elementwise op (its fast setup, else
    reorder_dimensions): outputs keep the memory layout of their inputs."""
    if not shape:
        return ()
    if all(op._shape == tuple(shape) for op in operands):
        if all(op.is_contiguous() for op in operands):
            return _contiguous_strides(shape)
        if len(shape) in CHANNELS_LAST_ORDER and all(_is_channels_last(op._shape, op._strides) for op in operands):
            return _channels_last_strides(shape)
        if all(_non_overlapping_and_dense(op._shape, op._strides) for op in operands) and \
                len({op._strides for op in operands}) == 1:
            return operands[0]._strides
    ndim = len(shape)
    strides = []
    for op in operands:  # broadcast strides in bytes; 0-d scalars and broadcast dims stride 0
        offset = ndim - op.ndim
        row = [0] * ndim
        for i, (size, stride) in enumerate(zip(op._shape, op._strides)):
            row[offset + i] = 0 if size == 1 and shape[offset + i] != 1 else stride * op._storage.data.itemsize
        strides.append(row)
    return _dense_strides_in_order(shape, strides)


CHANNELS_LAST_ORDER = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}  # dimensions from fastest to slowest


def _is_channels_last(shape, strides):
    """is_contiguous(memory_format=channels_last) (or channels_last_3d for 5-d)."""
    expected = 1
    for d in CHANNELS_LAST_ORDER[len(shape)]:
        if shape[d] != 1:
            if strides[d] != expected:
                return False
            expected *= shape[d]
    return True


def _channels_last_strides(shape):
    out, step = [0] * len(shape), 1
    for d in CHANNELS_LAST_ORDER[len(shape)]:
        out[d] = step
        step *= shape[d]
    return tuple(out)


def _dense_strides_in_order(shape, operand_strides):
    """Dense strides for `shape` whose dimension order follows the operands' strides
    (TensorIterator::reorder_dimensions and infer_dense_strides)."""
    ndim = len(shape)
    perm = list(range(ndim - 1, -1, -1))  # perm[0] is the fastest moving dimension

    def should_swap(dim0, dim1):
        for strides in operand_strides:
            stride0, stride1 = strides[dim0], strides[dim1]
            if stride0 == 0 or stride1 == 0:
                continue
            if stride0 != stride1:
                return -1 if stride0 < stride1 else 1
            if shape[dim0] > shape[dim1]:
                return 1
        return 0

    for i in range(1, ndim):
        dim1 = i
        for dim0 in range(i - 1, -1, -1):
            comparison = should_swap(perm[dim0], perm[dim1])
            if comparison > 0:
                perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
                dim1 = dim0
            elif comparison < 0:
                break
    out, step = [0] * ndim, 1
    for dim in perm:
        out[dim] = step
        step *= shape[dim]
    return tuple(out)


def _check_partial_overlap(out, other):
    """at::assert_no_partial_overlap, plus Unsupported where PyTorch's answer is 'too hard' but
    the tensors do overlap (the result would depend on the kernel's iteration order)."""
    if out is other or out._storage is not other._storage:
        return
    same_geometry = (out._offset, out._shape, out._strides) == (other._offset, other._shape, other._strides)
    if not (_non_overlapping_and_dense(out._shape, out._strides)
            and _non_overlapping_and_dense(other._shape, other._strides)):
        if not same_geometry and np.intersect1d(_addresses(out), _addresses(other)).size:
            raise Unsupported("in-place op reading memory it overlaps in an order-dependent way")
        return
    out_end, other_end = out._offset + out.numel(), other._offset + other.numel()
    if out._offset == other._offset and out_end == other_end:
        if out._strides == other._strides:
            return
    elif not (out._offset < other_end and other._offset < out_end):
        return
    raise ModelError("partial_overlap", "unsupported operation: some elements of the input tensor and the "
                     "written-to tensor refer to a single memory location. Please clone() the tensor before "
                     "performing the operation.")


def _handle_view_on_rebase(view, indirect):
    if view._creation == "default":
        return
    what = "its base or another view of its base has been" if indirect else "is being"
    if view._creation == "multi_output":
        raise ModelError("multi_output_view", f"Output 0 is a view and {what} modified inplace. This view is "
                         "the output of a function that returns multiple views. Such functions do not allow "
                         "the output views to be modified inplace.")
    raise ModelError("no_grad_view", f"A view was created in no_grad mode and {what} modified inplace with "
                     "grad mode enabled.")


def _read(t):
    """t's value as an operand: frozen when autograd does not see it (see the module docstring)."""
    value = np.array(t._array())
    if MODE.tape is not None and (not MODE.grad or not t.requires_grad or not _connected(t)):
        value = MODE.tape.frozen(value)
    return value


def _connected(t):
    """Whether gradients reach t's storage history: a chain of view nodes can end in nothing
    (a view of a view made under no_grad), and then t's values are constants to autograd."""
    node = t._edge()
    while node is not None and node.view:
        node = node.next[0] if node.next else None
    return node is not None


def _describe(t):
    return f"model.{t._dtype}{list(t._shape)}"


class _SavedTensor:
    """A tensor a backward node saved: its version then, and (to detect writes that bypass the
    version counter, through .data) its value then."""

    def __init__(self, t, is_output):
        self.tensor, self.is_output = t, is_output
        self.version, self.expected = t._version, t._version.value
        self.value = np.array(t._array())

    def unpack(self, node):
        """SavedVariable::unpack: an input's history is regenerated first (a changed no_grad or
        multi-output view raises there), then the version is checked."""
        if not self.is_output:
            self.tensor.grad_fn
        if self.version.value != self.expected:
            raise ModelError("saved_modified", f"one of the variables needed for gradient computation has been "
                             f"modified by an inplace operation: [{_describe(self.tensor)}], which is saved by "
                             f"{node.name}, is at version {self.version.value}; expected version {self.expected} "
                             f"instead.")
        if not np.array_equal(self.value, self.tensor._array(), equal_nan=True):
            raise Unsupported("a tensor saved for backward was changed through .data (PyTorch uses the new values)")


def _saved(t, is_output=False):
    return _SavedTensor(t, is_output)


class RefTensor:
    """A tensor of the reference model: a strided window on a numpy storage plus autograd metadata."""

    def __init__(self, storage, offset, shape, strides, dtype, version):
        self._storage, self._offset = storage, offset
        self._shape, self._strides = tuple(shape), tuple(strides)
        self._dtype, self._version = dtype, version
        self._rg = False  # requires_grad of a leaf
        self._grad_fn = None
        self._accumulate = None
        self._base = None  # the root base of an autograd view
        self._creation = "default"
        self._attr_version = version.value
        self.grad = None

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _fresh(array, dtype, bound, strides=None):
        """A new tensor holding `array`, laid out with `strides` (a dense layout; default contiguous)."""
        array = np.array(array, dtype=_storage_dtype(dtype), order="C")  # (ascontiguousarray makes 0-d 1-d)
        strides = _contiguous_strides(array.shape) if strides is None else tuple(strides)
        storage = _Storage(np.zeros(array.size, array.dtype), float(bound))
        t = RefTensor(storage, 0, array.shape, strides, dtype, _Version())
        t._array()[...] = array
        storage.roots.append(t)
        return t

    def _alias(self, version):
        """A non-view alias of the same memory (detach, .data, Parameter)."""
        t = RefTensor(self._storage, self._offset, self._shape, self._strides, self._dtype, version)
        self._storage.roots.append(t)
        return t

    def _array(self):
        itemsize = self._storage.data.itemsize
        return np.lib.stride_tricks.as_strided(self._storage.data[self._offset:], self._shape,
                                               [s * itemsize for s in self._strides], writeable=True)

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self):
        return self._shape

    @property
    def ndim(self):
        return len(self._shape)

    def numel(self):
        return math.prod(self._shape)

    @property
    def dtype(self):
        return DType(self._dtype)

    def is_contiguous(self):
        return _is_contiguous(self._shape, self._strides)

    @property
    def grad_fn(self):
        """PyTorch's VariableHooks::grad_fn: a view whose base changed regenerates its history."""
        if self._base is not None:
            base = self._base
            if self._grad_fn is None and not base.requires_grad:
                return None
            if self._attr_version != self._version.value:
                _handle_view_on_rebase(self, indirect=True)
                self._grad_fn = _Node("AsStridedBackward0", [base._edge()])
                self._attr_version = self._version.value
        return self._grad_fn

    @property
    def requires_grad(self):
        """The raw flag (no regeneration): an autograd view requires grad when its base does, even
        one made under no_grad (which has no grad_fn and passes no gradient)."""
        if self._rg or self._grad_fn is not None:
            return True
        return self._base is not None and self._base.requires_grad

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def _edge(self):
        fn = self.grad_fn
        if fn is not None:
            return fn
        if self._rg:
            if self._accumulate is None:
                self._accumulate = _Node("AccumulateGrad", leaf=self)
            return self._accumulate
        return None

    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad.")
        return np.array(self._array())

    def detach(self):
        return self._alias(self._version)

    @property
    def data(self):
        return self._alias(_Version())

    def __repr__(self):
        return f"RefTensor({np.array(self._array())!r}, {self._dtype})"

    # ------------------------------------------------------------------ views
    def _view(self, name, offset, shape, strides, multi=False):
        out = RefTensor(self._storage, offset, shape, strides, self._dtype, self._version)
        out._base = self._base if self._base is not None else self
        if not MODE.grad:
            creation = "no_grad"
        else:
            creation = "multi_output" if multi else "default"
        inherited = self._creation if self._base is not None else "default"
        out._creation = inherited if creation == "default" else creation
        if MODE.grad and self.requires_grad:
            out._grad_fn = _Node(name, [self._edge()])
        out._attr_version = self._version.value
        return out

    def _key_geometry(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        offset, shape, strides, dim = self._offset, [], [], 0
        for k in key:
            size, stride = self._shape[dim], self._strides[dim]
            if isinstance(k, int):
                if not -size <= k < size:
                    raise ModelError("other:IndexError", f"index {k} is out of bounds for dimension {dim} "
                                     f"with size {size}")
                offset += (k % size) * stride
            else:
                start, stop, step = k.indices(size)
                length = max(0, -(-(stop - start) // step))
                offset += start * stride
                shape.append(length)
                strides.append(stride * step)
            dim += 1
        shape.extend(self._shape[dim:])
        strides.extend(self._strides[dim:])
        return offset, tuple(shape), tuple(strides)

    def __getitem__(self, key):
        offset, shape, strides = self._key_geometry(key)
        return self._view("SliceBackward0", offset, shape, strides)

    def __setitem__(self, key, value):
        parts = key if isinstance(key, tuple) else (key,)
        full = all(isinstance(k, slice) and k.indices(size) == (0, size, 1) for k, size in zip(parts, self._shape))
        target = self if full else self[key]  # PyTorch writes x itself for x[:] = v (no view)
        if not isinstance(value, RefTensor):
            value = RefTensor._fresh(np.array(value), self._dtype, abs(value))
        elif value.shape != target.shape:  # at::indexing::copy_to: strip leading 1s, then expand
            shape = list(value.shape)
            while shape and shape[0] == 1:
                shape.pop(0)
            value = value.view(*shape).expand(*target.shape)
        target.copy_(value)

    def t(self):
        if self.ndim < 2:
            return self._view("TBackward0", self._offset, self._shape, self._strides)
        return self.transpose(0, 1)

    def transpose(self, dim0, dim1):
        order = list(range(self.ndim))
        order[dim0], order[dim1] = order[dim1], order[dim0]
        return self.permute(*order)

    def permute(self, *dims):
        dims = [d % self.ndim for d in dims]
        return self._view("PermuteBackward0", self._offset, [self._shape[d] for d in dims],
                          [self._strides[d] for d in dims])

    def view(self, *sizes):
        shape = _resolve_shape(sizes, self.numel(), "view")
        strides = _compute_view_strides(self._shape, self._strides, shape)
        if strides is None:
            raise ModelError("view_incompatible", "view size is not compatible with input tensor's size and "
                             "stride (at least one dimension spans across two contiguous subspaces). Use "
                             ".reshape(...) instead.")
        return self._view("ViewBackward0", self._offset, shape, strides)

    def reshape(self, *sizes):
        shape = _resolve_shape(sizes, self.numel(), "reshape")
        if _compute_view_strides(self._shape, self._strides, shape) is not None:
            return self.view(*shape)
        # a copy, not a view of one (at::_unsafe_view)
        return self._apply("UnsafeViewBackward0", [self], lambda a: a.reshape(shape), self._storage.bound,
                           dtype=self._dtype, layout="contiguous")

    def unsqueeze(self, dim):
        dim = dim % (self.ndim + 1)
        shape, strides = list(self._shape), list(self._strides)
        stride = 1 if dim >= self.ndim else shape[dim] * strides[dim]
        shape.insert(dim, 1)
        strides.insert(dim, stride)
        return self._view("UnsqueezeBackward0", self._offset, shape, strides)

    def squeeze(self, dim=None):
        dims = range(self.ndim) if dim is None else [dim % max(self.ndim, 1)]
        keep = [i for i in range(self.ndim) if not (i in dims and self._shape[i] == 1)]
        return self._view("SqueezeBackward0", self._offset, [self._shape[i] for i in keep],
                          [self._strides[i] for i in keep])

    def expand(self, *sizes):
        """at::inferExpandGeometry: expanded dims get stride 0; a new leading dim of size 1 the
        stride a contiguous layout would give it."""
        sizes = list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else list(sizes)
        lead = len(sizes) - self.ndim
        shape, strides = [0] * len(sizes), [0] * len(sizes)
        for i in range(len(sizes) - 1, -1, -1):
            if i >= lead:
                size, stride = self._shape[i - lead], self._strides[i - lead]
            else:
                size, stride = 1, shape[i + 1] * strides[i + 1] if i + 1 < len(sizes) else 1
            target = size if sizes[i] == -1 else sizes[i]
            if target != size:
                if size != 1:
                    raise ModelError("other:RuntimeError", f"expand: size {target} does not match {size} at dim {i}")
                size, stride = target, 0
            shape[i], strides[i] = size, stride
        return self._view("ExpandBackward0", self._offset, shape, strides)

    def narrow(self, dim, start, length):
        key = (slice(None),) * (dim % self.ndim) + (slice(start, start + length),)
        offset, shape, strides = self._key_geometry(key)
        return self._view("NarrowBackward0", offset, shape, strides)

    def _pieces(self, dim, bounds, name):
        dim = dim % self.ndim
        out = []
        for start, stop in bounds:
            key = (slice(None),) * dim + (slice(start, stop),)
            offset, shape, strides = self._key_geometry(key)
            out.append(self._view(name, offset, shape, strides, multi=True))
        return tuple(out)

    def split(self, size, dim=0):
        n = self._shape[dim % self.ndim]
        return self._pieces(dim, [(s, min(s + size, n)) for s in range(0, n, size)], "SplitBackward0")

    def chunk(self, chunks, dim=0):
        n = self._shape[dim % self.ndim]
        return self.split(-(-n // chunks), dim)

    def unbind(self, dim=0):
        dim = dim % self.ndim
        out = []
        for i in range(self._shape[dim]):
            offset, shape, strides = self._key_geometry((slice(None),) * dim + (i,))
            out.append(self._view("UnbindBackward0", offset, shape, strides, multi=True))
        return tuple(out)

    def contiguous(self):
        if self.is_contiguous():
            return self
        return self._apply("CloneBackward0", [self], lambda a: a.copy(), self._storage.bound, dtype=self._dtype,
                           layout="contiguous")

    # ------------------------------------------------------------------ out-of-place ops
    def _apply(self, name, tensors, compute, bound, save=None, dtype=None, layout="elementwise", scalar=False):
        """An out-of-place op. layout: 'elementwise' (TensorIterator's, over tensors plus a 0-d
        operand for a Python scalar), 'clone' (preserve_format) or 'contiguous'."""
        rg = [t.requires_grad for t in tensors] if MODE.grad else [False] * len(tensors)
        result = np.asarray(compute(*[_read(t) for t in tensors]))
        if layout == "elementwise":
            operands = list(tensors) + ([RefTensor._fresh(np.array(0.0), "float64", 0.0)] if scalar else [])
            strides = _iterator_strides(result.shape, operands)
        elif layout == "clone":
            strides = self._strides if _non_overlapping_and_dense(self._shape, self._strides) else \
                _dense_strides_in_order(self._shape, [self._strides])
        else:
            strides = None
        out = RefTensor._fresh(result, dtype or _result_dtype(tensors), bound, strides)
        if any(rg):
            edges = [t._edge() for t in tensors]
            needed = [edge is not None for edge in edges]  # the node's should_compute_output
            saved = [_saved(out, True) if s is None else _saved(s) for s in (save(needed) if save else [])]
            out._grad_fn = _Node(name, edges, saved)
        return out

    def _binary(self, other, name, fn, bound_fn, saves_operands=False):
        if isinstance(other, RefTensor):
            tensors = [self, other]
            save = (lambda rg: ([other] if rg[0] else []) + ([self] if rg[1] else [])) if saves_operands else None
            bound = bound_fn(self._storage.bound, other._storage.bound)
            return self._apply(name, tensors, fn, bound, save)
        return self._apply(name, [self], lambda a: fn(a, other), bound_fn(self._storage.bound, abs(other)),
                           scalar=True)

    def __mul__(self, other):
        return self._binary(other, "MulBackward0", np.multiply, lambda a, b: a * b, saves_operands=True)

    __rmul__ = __mul__

    def __add__(self, other):
        return self._binary(other, "AddBackward0", np.add, lambda a, b: a + b)

    __radd__ = __add__

    def __sub__(self, other):
        return self._binary(other, "SubBackward0", np.subtract, lambda a, b: a + b)

    def __truediv__(self, other):
        return self._binary(other, "DivBackward0", np.divide, lambda a, b: a / b)

    def __matmul__(self, other):
        if self._dtype != other._dtype:
            raise ModelError("other:RuntimeError", f"expected m1 and m2 to have the same dtype, but got: "
                             f"{self._dtype} != {other._dtype}")
        save = lambda rg: ([other] if rg[0] else []) + ([self] if rg[1] else [])
        bound = self._storage.bound * other._storage.bound * self._shape[-1]
        return self._apply("MmBackward0", [self, other], np.matmul, bound, save, layout="contiguous")

    def __gt__(self, other):
        value = np.array(self._array()) > (np.array(other._array()) if isinstance(other, RefTensor) else other)
        return RefTensor._fresh(_frozen(value), "bool", 1.0)

    def sigmoid(self):
        return self._apply("SigmoidBackward0", [self], _sigmoid, 1.0, lambda rg: [None])

    def exp(self):
        return self._apply("ExpBackward0", [self], np.exp, _exp_bound(self), lambda rg: [None])

    def relu(self):
        return self._apply("ReluBackward0", [self], _relu, self._storage.bound, lambda rg: [None])

    def clamp(self, min=None, max=None):
        return self._apply("ClampBackward1", [self], lambda a: _clamp(a, min, max), _clamp_bound(self, min, max),
                           lambda needed: [self])  # a single-input formula saves unconditionally

    def sum(self, dim=None):
        n = self.numel() if dim is None else self._shape[dim]
        return self._apply("SumBackward0", [self], lambda a: np.sum(a, axis=dim), self._storage.bound * n,
                           layout="contiguous")

    def clone(self):
        return self._apply("CloneBackward0", [self], lambda a: a.copy(), self._storage.bound, dtype=self._dtype,
                           layout="clone")

    # ------------------------------------------------------------------ in-place ops
    def _inplace(self, name, others, compute, bound, overlap_checks=True, save=None, saves_result=False,
                 mask=None):
        any_rg = False
        if MODE.grad:
            self_rg = self.requires_grad
            any_rg = any([self_rg] + [o.requires_grad for o in others])
        if any_rg:
            self._check_inplace()
            root = self._base if self._base is not None else self
            if not root.requires_grad and any(r is not root and r.requires_grad for r in self._storage.roots):
                raise Unsupported("a detached alias gets a second autograd history on one storage")
            edges = [o._edge() for o in others]
            base_edge = self._base._edge() if self._base is not None else self._edge()
            self_needed = (self._edge() if self._base is not None else base_edge) is not None
            saved = [_saved(s) for s in save(self_needed, [e is not None for e in edges])] if save else []
        if overlap_checks:
            _check_internal_overlap(self)
            for other in others:
                _check_partial_overlap(self, other)
        old = _read(self)
        new = compute(old, *[_read(o) for o in others])
        new = np.broadcast_to(new, self._shape).astype(self._storage.data.dtype)
        target = self._array()
        if mask is not None:  # masked_fill_ writes only where the mask holds (its target may be expanded)
            mask = np.broadcast_to(mask, self._shape)
            target[mask] = (target + (new - old))[mask] if MODE.tape is not None and not any_rg else new[mask]
        elif MODE.tape is not None and not any_rg:
            target[...] = target + (new - old)
        else:
            target[...] = new
        self._storage.bound = max(self._storage.bound, bound)
        self._version.value += 1
        if any_rg:
            if saves_result:
                saved.append(_saved(self, True))
            if self._base is not None:
                copy_slices = _Node("CopySlices", [base_edge] + edges, saved)
                copy_slices.writes_overlapping_view = base_edge is not None and _has_internal_overlap(self)
                self._base._grad_fn = copy_slices
                self._grad_fn = _Node("AsStridedBackward0", [copy_slices])
                self._attr_version = self._version.value
            else:
                self._grad_fn = _Node(name, [base_edge] + edges, saved)
        return self

    def _check_inplace(self):
        """PyTorch's check_inplace, run when grad mode is on and an operand requires grad. Its
        is_leaf reads the raw grad_fn: a view whose history was not regenerated yet counts as a leaf."""
        if self._base is not None:
            _handle_view_on_rebase(self, indirect=False)
            if self.requires_grad and self._base._grad_fn is None:
                raise ModelError("view_of_leaf_inplace", "a view of a leaf Variable that requires grad is being "
                                 "used in an in-place operation.")
        if self.requires_grad and self._grad_fn is None:
            raise ModelError("leaf_inplace", "a leaf Variable that requires grad is being used in an in-place "
                             "operation.")

    def _inplace_binary(self, other, name, fn, bound_fn, saves_other=False):
        if isinstance(other, RefTensor):
            save = (lambda self_rg, other_rg: [other] if self_rg else []) if saves_other else None
            return self._inplace(name, [other], fn, bound_fn(self._storage.bound, other._storage.bound), save=save)
        return self._inplace(name, [], lambda a: fn(a, other), bound_fn(self._storage.bound, abs(other)))

    def add_(self, other):
        return self._inplace_binary(other, "AddBackward0", np.add, lambda a, b: a + b)

    def sub_(self, other):
        return self._inplace_binary(other, "SubBackward0", np.subtract, lambda a, b: a + b)

    def mul_(self, other):
        return self._inplace_binary(other, "MulBackward0", np.multiply, lambda a, b: a * b, saves_other=True)

    def div_(self, other):
        return self._inplace_binary(other, "DivBackward0", np.divide, lambda a, b: a / b)

    def zero_(self):
        return self._inplace("ZeroBackward0", [], lambda a: np.zeros_like(a), 0.0, overlap_checks=False)

    def fill_(self, value):
        return self._inplace("FillBackward0", [], lambda a: np.full_like(a, value), abs(value), overlap_checks=False)

    def copy_(self, src):
        if src is self or (src._storage is self._storage and (src._offset, src._shape, src._strides) ==
                           (self._offset, self._shape, self._strides) and src._dtype == self._dtype):
            checks = False  # at::copy_ returns early for the same data
        else:
            checks = True
        return self._inplace("CopyBackwards", [src], lambda a, b: np.broadcast_to(b, a.shape), src._storage.bound,
                             overlap_checks=checks)

    def clamp_(self, min=None, max=None):
        return self._inplace("ClampBackward1", [], lambda a: _clamp(a, min, max), _clamp_bound(self, min, max))

    def masked_fill_(self, mask, value):
        mask_value = np.array(mask._array())
        return self._inplace("MaskedFillBackward0", [], lambda a: np.where(mask_value, value, a),
                             max(self._storage.bound, abs(value)), overlap_checks=False, mask=mask_value)

    def exp_(self):
        return self._inplace("ExpBackward0", [], np.exp, _exp_bound(self), saves_result=True)

    def sigmoid_(self):
        return self._inplace("SigmoidBackward0", [], _sigmoid, 1.0, saves_result=True)

    def relu_(self):
        return self._inplace("ReluBackward0", [], _relu, self._storage.bound, saves_result=True)

    # ------------------------------------------------------------------ backward
    def backward(self):
        if MODE.tape is not None:
            MODE.tape.loss = float(np.sum(self._array()))
            return
        if self.grad_fn is None:
            raise ModelError("no_grad_fn", "element 0 of tensors does not require grad and does not have a grad_fn")
        # PyTorch's engine: a node runs once every node feeding it ran, latest created first
        root, pending, stack, seen = self.grad_fn, {}, [self.grad_fn], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for after in node.next:
                pending[id(after)] = pending.get(id(after), 0) + 1
                stack.append(after)
        ready = [root]
        while ready:
            node = max(ready, key=lambda n: (n.leaf is not None, n.sequence))
            ready.remove(node)
            for after in node.next:
                pending[id(after)] -= 1
                if pending[id(after)] == 0:
                    ready.append(after)
            if node.writes_overlapping_view:
                raise _internal_overlap_error()
            for saved in node.saved:
                saved.unpack(node)
            if node.leaf is not None:
                node.leaf.grad = REACHED


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _relu(a):
    mask = _frozen(a > 0)
    return np.where(mask, a, np.zeros_like(a))


def _clamp(a, low, high):
    """clamp with its kink mask frozen: inside [low, high] (inclusive, as clamp_backward) the
    value moves with a, outside it is the bound."""
    inside = np.ones(a.shape, bool)
    if low is not None:
        inside &= a >= low
    if high is not None:
        inside &= a <= high
    inside, clipped = _frozen((inside, np.clip(a, low, high)))
    return np.where(inside, a, clipped)


def _exp_bound(t):
    return math.exp(min(t._storage.bound, 700.0))


def _clamp_bound(t, low, high):
    limits = [abs(v) for v in (low, high) if v is not None]
    return min(t._storage.bound, max(limits)) if low is not None and high is not None else t._storage.bound


class _NoGrad:
    def __enter__(self):
        self.previous, MODE.grad = MODE.grad, False

    def __exit__(self, *exc):
        MODE.grad = self.previous


class _Module:
    """The slice of nn.Module the programs use: attributes (parameters, buffers), calling forward."""

    def register_buffer(self, name, tensor):
        setattr(self, name, tensor)

    def __call__(self, *args):
        return self.forward(*args)


def _parameter(tensor):
    p = tensor._alias(_Version())
    p._rg = True
    return p


class _NN:
    Module = _Module
    Parameter = staticmethod(_parameter)


class ModelLibrary:
    """`T` for the reference model: the few torch functions the programs call."""
    float32 = DType("float32")
    float64 = DType("float64")
    bool = DType("bool")
    nn = _NN
    no_grad = _NoGrad

    @staticmethod
    def tensor(data, dtype=None, requires_grad=False):
        """A new leaf; its values are bounded by 1 (inputs are drawn from [-1, 1]) or their maximum."""
        array = np.asarray(data)
        name = dtype.name if dtype is not None else {"float64": "float64", "bool": "bool"}.get(str(array.dtype),
                                                                                               "float32")
        t = RefTensor._fresh(array, name, max(1.0, float(np.max(np.abs(array)))) if array.size else 1.0)
        t._rg = requires_grad
        return t

    @staticmethod
    def _filled(value, sizes, dtype):
        sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else tuple(sizes)
        name = dtype.name if dtype is not None else "float32"
        return RefTensor._fresh(np.full(sizes, value), name, abs(value))

    @classmethod
    def zeros(cls, *sizes, dtype=None):
        return cls._filled(0.0, sizes, dtype)

    @classmethod
    def ones(cls, *sizes, dtype=None):
        return cls._filled(1.0, sizes, dtype)


MODEL = ModelLibrary()


# ============================================================================ programs
@dataclass(frozen=True)
class InputSpec:
    """One tensor the program reads. source: 'arg' (passed per call, fresh values each call),
    'state' (in the closure's dict S), 'param' or 'buffer' (of the nn.Module). A 'state' input
    with fresh=True is replaced by a new tensor before every call; otherwise state, params and
    buffers persist across calls, so what one call writes the next one reads. An argument with
    a `view` (e.g. 'x0[1]') is that view of an earlier argument: the two share memory."""
    name: str
    shape: tuple
    dtype: str
    requires_grad: bool
    source: str = "arg"
    fresh: bool = True
    view: str = ""

    @property
    def persistent(self):
        return self.source != "arg" and not (self.source == "state" and self.fresh)


@dataclass(frozen=True)
class Stmt:
    """One line of the program with `T` for the library, or a `with T.no_grad():` block (body)."""
    code: str
    op: str
    body: tuple = ()


@dataclass(frozen=True)
class Program:
    form: str  # 'function', 'closure' (over a dict S) or 'module' (an nn.Module)
    inputs: tuple
    body: tuple
    outputs: tuple  # names returned
    loss_terms: tuple = ()  # loss = sum((o * o).sum() for o in loss_terms)
    backward: str = "none"  # 'none', 'inside' (loss.backward() in the program) or 'outside' (by the caller)
    seed: int = 0

    def statements(self):
        for stmt in self.body:
            yield stmt
            yield from stmt.body


def _body_lines(body, indent):
    lines = []
    for stmt in body:
        lines.append(indent + stmt.code)
        lines.extend(indent + "    " + inner.code for inner in stmt.body)
    return lines


def source(program, lib="T"):
    """The program as Python source; lib names the library (`T` to run it, `torch` to read it)."""
    args = ", ".join(i.name for i in program.inputs if i.source == "arg")
    lines, indent, prologue = [], "    ", []
    if program.form == "function":
        lines.append(f"def program({args}):")
    elif program.form == "closure":
        lines += ["def make_program(S):", f"    def program({args}):"]
        indent = "        "
        prologue = [f'{i.name} = S["{i.name}"]' for i in program.inputs if i.source == "state"]
    else:
        members = [i for i in program.inputs if i.source in ("param", "buffer")]
        lines += ["class Program(T.nn.Module):", f"    def __init__(self, {', '.join(i.name for i in members)}):",
                  "        super().__init__()"]
        for i in members:
            lines.append(f"        self.{i.name} = T.nn.Parameter({i.name})" if i.source == "param"
                         else f'        self.register_buffer("{i.name}", {i.name})')
        lines += ["", f"    def forward(self, {args}):" if args else "    def forward(self):"]
        indent = "        "
        prologue = [f"{i.name} = self.{i.name}" for i in members]
    lines += [indent + line for line in prologue]
    lines += _body_lines(program.body, indent)
    returned = list(program.outputs)
    if program.backward != "none":
        lines.append(indent + "loss = " + " + ".join(f"({o} * {o}).sum()" for o in program.loss_terms))
        if program.backward == "inside":
            lines.append(indent + "loss.backward()")
        else:
            returned.append("loss")
    lines.append(indent + ("return (" + ", ".join(returned) + ("," if len(returned) == 1 else "") + ")"))
    if program.form == "closure":
        lines.append("    return program")
    text = "\n".join(lines) + "\n"
    return text if lib == "T" else re.sub(r"\bT\.", lib + ".", text)


def describe(program, lib="torch"):
    """The program and how the oracle calls it, as PyTorch code a person can run."""
    lines = [source(program, lib).rstrip("\n"), ""]
    for i in program.inputs:
        if i.view:
            lines.append(f"# {i.name} = {i.view}  (argument sharing memory with the one it views)")
            continue
        how = {"arg": "argument", "state": "S[...] entry" + (", replaced before every call" if i.fresh else
                                                               ", kept across calls"),
               "param": "parameter", "buffer": "buffer"}[i.source]
        rg = ", requires_grad=True" if i.requires_grad and i.source != "param" else ""
        lines.append(f"# {i.name}: {lib}.rand({', '.join(map(str, i.shape))}, dtype={lib}.{i.dtype}{rg}) * 2 - 1"
                     f"  ({how})")
    call = {"function": "program", "closure": "make_program(S)",
            "module": "Program(" + ", ".join(i.name for i in program.inputs if i.source in ("param", "buffer"))
            + ")"}[program.form]
    args = ", ".join(i.name for i in program.inputs if i.source == "arg")
    lines.append(f"# f = {call}; compiled: ember.compile(f, backend=...); called {CALLS} times as f({args})"
                 f" with fresh values{'; then out[-1].backward()' if program.backward == 'outside' else ''}")
    return "\n".join(lines)


def input_arrays(program, call):
    """The values of every input for call number `call` (persistent ones use call 0's; views of
    other arguments have none of their own)."""
    rng = np.random.default_rng([program.seed, call])
    return {i.name: rng.uniform(-1.0, 1.0, i.shape).astype(i.dtype) for i in program.inputs if not i.view}


def build_inputs(specs, lib, arrays, keep=None):
    """Tensors of lib for the inputs: from `arrays`, except those in `keep` (reused), and the
    argument views built from the tensors they view."""
    keep = keep or {}
    tensors = {}
    for spec in specs:
        if spec.name in keep:
            tensors[spec.name] = keep[spec.name]
        elif not spec.view:
            tensors[spec.name] = _new_tensor(lib, spec, arrays[spec.name])
    for spec in specs:
        if spec.view:
            tensors[spec.name] = eval(spec.view, {}, dict(tensors))  # noqa: S307 -- e.g. "x0[1]"
    return tensors


# ============================================================================ generator
SHAPES = ((3, 4), (2, 3, 4), (4,), (4, 4), (3, 1), (2, 1, 4), (1, 4), (4, 3))
SCALARS = (0.5, 2.0, -1.5, 0.75)
FILL_VALUES = (0.75, -0.25, 1.5)  # never a clamp bound: no value sits exactly on a kink
CLAMPS = ("-0.6, 0.6", "-0.3, 0.9", "min=0.1", "max=0.2")
MAX_ELEMENTS = 64
# hypothesis favours the first entries of a sampled list: the most useful come first
STATEMENT_KINDS = ("inplace", "view", "fresh", "compute", "inplace", "view", "setitem", "inplace", "no_grad",
                   "compute", "view", "inplace", "fresh")


def _broadcasts_to(shape, target):
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


def _broadcast_shape(a, b):
    out = []
    for x, y in itertools.zip_longest(reversed(a), reversed(b), fillvalue=1):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(reversed(out))


def _reshapes(numel):
    shapes = [(numel,), (-1,)]
    for a in range(1, numel + 1):
        if numel % a == 0:
            shapes.append((a, numel // a))
            rest = numel // a
            shapes.extend((a, b, rest // b) for b in range(1, rest + 1) if rest % b == 0)
    return shapes


@st.composite
def _index_key(draw, shape):
    """A basic index (ints and slices with steps) of a tensor of `shape`: (text, result shape)."""
    count = draw(st.integers(1, len(shape)))
    parts, out = [], []
    for size in shape[:count]:
        if draw(st.booleans()) and count > 0:
            parts.append(str(draw(st.integers(0, size - 1))))
            continue
        start = draw(st.integers(0, size - 1))
        stop = draw(st.integers(start + 1, size))
        step = draw(st.sampled_from((1, 1, 2)))
        text = f"{start or ''}:{'' if stop == size else stop}" + (f":{step}" if step != 1 else "")
        parts.append(text)
        out.append(len(range(start, stop, step)))
    out.extend(shape[count:])
    return ", ".join(parts), tuple(out)


@st.composite
def _view_expr(draw, name, shape):
    """A view (or alias) of `name`: (right-hand side, number of results)."""
    ndim = len(shape)
    choices = ["index", "expand", "view", "t", "transpose", "unbind", "detach", "chunk", "narrow", "reshape",
               "data", "permute", "index", "unsqueeze", "squeeze", "split", "contiguous"]
    if not ndim:
        choices = [c for c in choices if c not in ("index", "narrow", "squeeze", "chunk", "split", "unbind")]
    if ndim and shape[0] > 4:
        choices.remove("unbind")
    if ndim > 2:
        choices.remove("t")
    if ndim < 2:
        choices = [c for c in choices if c not in ("transpose", "permute")]
    kind = draw(st.sampled_from(choices))
    if kind == "index":
        key, _ = draw(_index_key(shape))
        return f"{name}[{key}]", 1
    if kind in ("detach", "contiguous", "t"):
        return f"{name}.{kind}()", 1
    if kind == "data":
        return f"{name}.data", 1
    if kind in ("view", "reshape"):
        new = draw(st.sampled_from(_reshapes(math.prod(shape))))
        return f"{name}.{kind}({', '.join(map(str, new))})", 1
    if kind == "unsqueeze":
        return f"{name}.unsqueeze({draw(st.integers(-ndim - 1, ndim))})", 1
    if kind == "squeeze":
        ones = [d for d, s in enumerate(shape) if s == 1]
        if ones and draw(st.booleans()):
            return f"{name}.squeeze()", 1
        return f"{name}.squeeze({draw(st.sampled_from(ones or list(range(ndim))))})", 1
    if kind == "expand":
        sizes = [draw(st.sampled_from((1, 2, 3))) if s == 1 else s for s in shape]
        if ndim < 3 and (draw(st.booleans()) or all(s != 1 for s in shape)):
            sizes.insert(0, 2)
        if math.prod(sizes) > MAX_ELEMENTS:
            sizes = list(shape)
        return f"{name}.expand({', '.join(map(str, sizes))})", 1
    dim = draw(st.integers(0, ndim - 1))
    size = shape[dim]
    if kind == "narrow":
        start = draw(st.integers(0, size - 1))
        return f"{name}.narrow({dim}, {start}, {draw(st.integers(1, size - start))})", 1
    if kind == "chunk":
        chunks = draw(st.integers(1, 3))
        return f"{name}.chunk({chunks}, {dim})", len(range(0, size, -(-size // chunks)))
    if kind == "split":
        piece = draw(st.integers(max(1, -(-size // 4)), size))
        return f"{name}.split({piece}, {dim})", len(range(0, size, piece))
    if kind == "unbind":
        return f"{name}.unbind(0)", shape[0]
    if kind == "transpose":
        d0, d1 = draw(st.lists(st.integers(0, ndim - 1), min_size=2, max_size=2, unique=True))
        return f"{name}.transpose({d0}, {d1})", 1
    order = draw(st.permutations(range(ndim)))
    return f"{name}.permute({', '.join(map(str, order))})", 1


class _Builder:
    """Grows a program statement by statement, running each prefix in the reference model."""

    def __init__(self, inputs):
        self.inputs, self.body, self.error, self.counter = inputs, [], None, 0
        self.env = self._run([])

    def fresh_name(self):
        self.counter += 1
        return f"t{self.counter}"

    def _run(self, body):
        """Run body as CALLS calls (persistent inputs carried over, so bounds see their growth)."""
        MODE.grad, MODE.tape = True, None
        code = compile("\n".join(_body_lines(body, "")), "<generated>", "exec")
        rng = np.random.default_rng(0)
        carried = {}
        for _ in range(CALLS if any(spec.persistent for spec in self.inputs) else 1):
            arrays = {spec.name: rng.uniform(-1, 1, spec.shape).astype(spec.dtype) for spec in self.inputs}
            env = {"T": MODEL}
            env.update(build_inputs(self.inputs, MODEL, arrays, carried))
            for spec in self.inputs:
                if spec.source == "param":
                    env[spec.name]._rg = True  # what nn.Parameter makes of it
            with np.errstate(all="ignore"):  # a statement overflowing is rejected by its bound below
                exec(code, env)
            carried = {spec.name: env[spec.name] for spec in self.inputs if spec.persistent}
        return env

    def tensors(self):
        """Live float tensors, the most recent first."""
        names = [name for name, t in self.env.items() if isinstance(t, RefTensor) and t._dtype != "bool"]
        return {name: self.env[name] for name in reversed(names)}

    def saved_names(self):
        """Live tensors whose version a node of a live autograd graph saved (in-place on them makes
        backward raise)."""
        versions, seen = set(), set()
        stack = [t._grad_fn for t in self.env.values() if isinstance(t, RefTensor) and t._grad_fn is not None]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            versions.update(id(saved.version) for saved in node.saved)
            stack.extend(node.next)
        return [name for name, t in self.tensors().items() if id(t._version) in versions]

    def try_add(self, stmt, in_block):
        """Add stmt (inside the open no_grad block when in_block). Returns 'ok', 'reject', or the
        ModelError PyTorch would raise (the statement is then not added)."""
        if in_block:
            block = self.body[-1]
            body = self.body[:-1] + [Stmt(block.code, block.op, block.body + (stmt,))]
        else:
            body = self.body + [stmt]
        try:
            env = self._run(body)
        except ModelError as error:
            if error.kind.startswith("other"):
                return "reject"
            return error
        except Unsupported:
            return "reject"
        for spec in self.inputs:
            if spec.persistent and not spec.requires_grad and env[spec.name].requires_grad:
                return "reject"  # it would carry this call's autograd history into the next call
        if any(t._storage.bound > BOUND_LIMIT for t in env.values() if isinstance(t, RefTensor)):
            return "reject"
        self.body, self.env = body, env
        return "ok"

    def keep_error(self, stmt, in_block):
        if in_block:
            block = self.body[-1]
            self.body[-1] = Stmt(block.code, block.op, block.body + (stmt,))
        else:
            self.body.append(stmt)


@st.composite
def _statement(draw, builder, kind):
    tensors = builder.tensors()
    names = list(tensors)
    saved = builder.saved_names() if kind in ("inplace", "setitem") else []
    name = draw(st.sampled_from(saved if saved and draw(st.booleans()) else names))
    t = tensors[name]
    shape = t.shape
    if kind == "fresh" and any(tensors[n]._rg for n in names) and draw(st.booleans()):
        leaf = draw(st.sampled_from([n for n in names if tensors[n]._rg]))
        return Stmt(f"{builder.fresh_name()} = {leaf} * 1", "mul_scalar")  # a non-leaf that requires grad
    if kind == "view":
        rhs, count = draw(_view_expr(name, shape))
        targets = [builder.fresh_name() for _ in range(count)]
        lhs = targets[0] if count == 1 else ", ".join(targets) + ("," if count == 1 else "")
        return Stmt(f"{lhs} = {rhs}", re.sub(r"^\w+\.?|\(.*$|\[.*$", "", rhs) or "index")
    if kind == "fresh":
        how = draw(st.sampled_from(("mul1", "clone", "zeros", "ones")))
        new = builder.fresh_name()
        if how == "mul1":
            return Stmt(f"{new} = {name} * 1", "mul_scalar")
        if how == "clone":
            return Stmt(f"{new} = {name}.clone()", "clone")
        dims = ", ".join(map(str, draw(st.sampled_from(SHAPES))))
        dtype = draw(st.sampled_from(("float32", "float64")))
        return Stmt(f"{new} = T.{how}({dims}, dtype=T.{dtype})", how)
    if kind == "compute":
        new = builder.fresh_name()
        ops = ["mul", "matmul", "sigmoid", "add", "sum_dim", "relu", "clamp", "sum"]
        if t._storage.bound <= EXP_BOUND:
            ops.append("exp")
        op = draw(st.sampled_from(ops))
        if op in ("mul", "add"):
            partners = [n for n in names if _broadcast_shape(tensors[n].shape, shape) is not None
                        and math.prod(_broadcast_shape(tensors[n].shape, shape)) <= MAX_ELEMENTS]
            other = draw(st.sampled_from(partners + ["scalar"]))
            operand = str(draw(st.sampled_from(SCALARS))) if other == "scalar" else other
            return Stmt(f"{new} = {name} {'*' if op == 'mul' else '+'} {operand}", op)
        if op == "matmul":
            if len(shape) == 2:
                partners = [n for n in names if len(tensors[n].shape) == 2 and tensors[n].shape[0] == shape[1]]
                partner = draw(st.sampled_from(partners + [f"{name}.t()"]))  # mm saves the view name.t()
                return Stmt(f"{new} = {name} @ {partner}", "matmul")
            op = "sum"
        if op == "sum_dim" and t.ndim:
            return Stmt(f"{new} = {name}.sum({draw(st.integers(0, t.ndim - 1))})", "sum")
        if op in ("sum", "sum_dim"):
            return Stmt(f"{new} = {name}.sum()", "sum")
        if op == "clamp":
            return Stmt(f"{new} = {name}.clamp({draw(st.sampled_from(CLAMPS))})", "clamp")
        return Stmt(f"{new} = {name}.{op}()", op)
    if kind == "setitem":
        if not t.ndim:
            kind = "inplace"
        else:
            key, indexed = draw(_index_key(shape))
            values = [n for n in names if _broadcasts_to(tensors[n].shape, indexed)]
            value = draw(st.sampled_from(values + ["scalar"]))
            if value == "scalar":
                value = str(draw(st.sampled_from(FILL_VALUES)))
            return Stmt(f"{name}[{key}] = {value}", "setitem")
    ops = ["add_", "sub_", "mul_", "div_", "zero_", "fill_", "clamp_", "copy_", "masked_fill_", "sigmoid_", "relu_"]
    if t._storage.bound <= EXP_BOUND:
        ops.append("exp_")
    op = draw(st.sampled_from(ops))
    operands = [n for n in names if _broadcasts_to(tensors[n].shape, shape)]
    if op in ("add_", "sub_", "mul_"):
        other = draw(st.sampled_from(operands + ["scalar"]))
        operand = str(draw(st.sampled_from(SCALARS))) if other == "scalar" else other
        return Stmt(f"{name}.{op}({operand})", op)
    if op == "div_":
        return Stmt(f"{name}.div_({draw(st.sampled_from(SCALARS))})", op)
    if op == "fill_":
        return Stmt(f"{name}.fill_({draw(st.sampled_from(FILL_VALUES))})", op)
    if op == "clamp_":
        return Stmt(f"{name}.clamp_({draw(st.sampled_from(CLAMPS))})", op)
    if op == "copy_":
        return Stmt(f"{name}.copy_({draw(st.sampled_from(operands))})", op)
    if op == "masked_fill_":
        mask = draw(st.sampled_from(operands))
        return Stmt(f"{name}.masked_fill_({mask} > 0, {draw(st.sampled_from(FILL_VALUES))})", op)
    return Stmt(f"{name}.{op}()", op)


@st.composite
def _inputs(draw, form):
    count = draw(st.integers(1, 3))
    specs = []
    for index in range(count):
        shape = draw(st.sampled_from(SHAPES))
        dtype = draw(st.sampled_from(("float32", "float32", "float64")))
        if form == "closure":
            source = "state" if index == count - 1 else draw(st.sampled_from(("arg", "state")))
        elif form == "module":
            source = draw(st.sampled_from(("param", "buffer"))) if index == count - 1 else \
                draw(st.sampled_from(("arg", "param", "buffer")))
        else:
            source = "arg"
        requires_grad = {"param": True, "buffer": False}.get(source) if source in ("param", "buffer") \
            else draw(st.sampled_from((True, False, True)))
        fresh = draw(st.booleans()) if source == "state" else True
        prefix = {"arg": "x", "state": "s", "param": "p", "buffer": "b"}[source]
        bases = [s for s in specs if s.source == "arg" and not s.view]
        if source == "arg" and bases and draw(st.integers(0, 4)) == 4:
            base = draw(st.sampled_from(bases))
            view = draw(st.sampled_from(_argument_views(base)))
            probe = MODEL.tensor(np.zeros(base.shape), dtype=getattr(MODEL, base.dtype))
            shape = eval(view, {}, {base.name: probe}).shape  # noqa: S307
            specs.append(InputSpec(f"{prefix}{index}", shape, base.dtype, False, "arg", True, view))
            continue
        specs.append(InputSpec(f"{prefix}{index}", shape, dtype, requires_grad, source, fresh))
    return tuple(specs)


def _argument_views(base):
    """Views of argument `base` passed as another argument."""
    name, shape = base.name, base.shape
    views = [f"{name}[0]", f"{name}[1:]", f"{name}.unsqueeze(0)", f"{name}.detach()"]
    if len(shape) == 2:
        views.append(f"{name}.t()")
    if len(shape) >= 2:
        views.append(f"{name}[:, ::2]")
    return [v for v in views if not (v.endswith("[1:]") and shape[0] < 2)]


@st.composite
def programs(draw, min_statements=2, max_statements=10, forms=("function", "function", "closure", "module")):
    """Hypothesis strategy of Programs (see the module docstring)."""
    form = draw(st.sampled_from(forms))
    inputs = draw(_inputs(form))
    builder = _Builder(inputs)
    target = draw(st.integers(min_statements, max_statements))
    statements, attempts, in_block, block_left = 0, 0, False, 0
    while statements < target and attempts < 6 * max_statements:
        attempts += 1
        kind = draw(st.sampled_from(STATEMENT_KINDS))
        if kind == "no_grad":
            if in_block:
                continue
            builder.body.append(Stmt("with T.no_grad():", "no_grad"))
            in_block, block_left = True, draw(st.integers(1, 3))
            continue
        stmt = draw(_statement(builder, kind))
        outcome = builder.try_add(stmt, in_block)
        if outcome == "reject":
            continue
        if outcome != "ok":
            if draw(st.integers(0, 7)) == 7:  # keep some errors as the program's end
                builder.keep_error(stmt, in_block)
                builder.error = outcome
                break
            continue
        statements += 1
        if in_block:
            block_left -= 1
            in_block = block_left > 0
    builder.body = [s for s in builder.body if s.op != "no_grad" or s.body]
    seed = draw(st.integers(0, 2 ** 31 - 1))
    if builder.error is not None:
        return Program(form, inputs, tuple(builder.body), (), seed=seed)
    tensors = builder.tensors()
    differentiable = [n for n, t in tensors.items() if t.requires_grad]
    outputs = tuple(draw(st.lists(st.sampled_from(differentiable + list(tensors)), min_size=1, max_size=3,
                                  unique=True)))
    terms = []
    for name in outputs:
        try:
            if tensors[name].requires_grad:
                terms.append(name)
        except ModelError:
            pass
    backward = draw(st.sampled_from(("inside", "outside", "inside", "none"))) if terms else "none"
    program = Program(form, inputs, tuple(builder.body), outputs, tuple(terms) if backward != "none" else (),
                      backward, seed)
    if backward != "none" and any(r.error == "other:Unsupported" for r in run_program(program, MODEL,
                                                                                         gradients=False)):
        program = replace(program, loss_terms=(), backward="none")  # e.g. backward reads a .data write
    return program


# ============================================================================ running
@dataclass
class CallResult:
    """What one call did, as the caller sees it. Arrays are copies taken right after the call."""
    error: str = None  # ERROR_KINDS name, or None
    message: str = ""
    outputs: list = field(default_factory=list)  # (name, array, dtype, requires_grad or 'raises')
    state: dict = field(default_factory=dict)  # input name -> (array, dtype, requires_grad, is_leaf)
    grads: dict = field(default_factory=dict)  # input name -> array, None, or REACHED (the model)
    directions: list = None  # the model: [(direction by input name, finite-difference derivative)]
    probe: dict = None  # after the last call, values once every output was filled in place (aliasing)
    probe_raised: tuple = ()  # names of returned tensors whose fill_ under no_grad raised


def _filename(program):
    return f"<view_program_{hashlib.sha1(source(program).encode()).hexdigest()[:12]}>"


def namespace_for(program, lib):
    """Execute the program's source with T = lib; linecache holds it for tracebacks and guards."""
    text = source(program)
    filename = _filename(program)
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace = {"T": lib, "__name__": "view_program"}
    exec(compile(text, filename, "exec"), namespace)
    return namespace


def _dtype_name(t):
    return str(t.dtype).split(".")[-1]


def _new_tensor(lib, spec, array):
    rg = spec.requires_grad and spec.source != "param"  # a parameter gets requires_grad from nn.Parameter
    return lib.tensor(np.array(array, copy=True), dtype=getattr(lib, spec.dtype), requires_grad=rg)


def _target(program, namespace, tensors):
    """The callable to call (function, closure or module) and, for modules, the module."""
    if program.form == "function":
        return namespace["program"], None
    if program.form == "closure":
        state = {i.name: tensors[i.name] for i in program.inputs if i.source == "state"}
        return namespace["make_program"](state), state
    module = namespace["Program"](*[tensors[i.name] for i in program.inputs if i.source in ("param", "buffer")])
    return module, module


def _call(program, fn, args):
    result = fn(*args)
    if program.backward == "outside":
        result[-1].backward()
    return result


def _try(read):
    try:
        return read()
    except Exception:  # noqa: BLE001 -- PyTorch raises here for some views (see the module docstring)
        return "raises"


def _value(t):
    if not hasattr(t, "detach"):
        return np.asarray(t)
    return np.array(t.detach().numpy(), copy=True)


def _record_state(program, tensors, record):
    for spec in program.inputs:
        t = tensors[spec.name]
        record.state[spec.name] = (_value(t), _dtype_name(t), _try(lambda: bool(t.requires_grad)),
                                   _try(lambda: bool(t.is_leaf)))
        if spec.requires_grad:
            grad = t.grad
            record.grads[spec.name] = grad if grad is None or isinstance(grad, str) else _value(grad)


def run_program(program, lib, wrap=None, calls=CALLS, gradients=True):
    """Call the program `calls` times (fresh argument values each call) with library `lib`, the
    callable wrapped by `wrap` (e.g. ember.compile). Returns one CallResult per call. For the
    model, `gradients` computes the finite-difference reference of each call's gradients."""
    namespace = namespace_for(program, lib)
    values = [input_arrays(program, k) for k in range(calls)]
    tensors = build_inputs([i for i in program.inputs if i.source != "arg"], lib, values[0])
    target, holder = _target(program, namespace, tensors)
    if program.form == "module":
        tensors.update({i.name: getattr(holder, i.name) for i in program.inputs if i.source != "arg"})
    fn = wrap(target) if wrap is not None else target
    results, outputs = [], ()
    for k in range(calls):
        start = {name: _value(t) for name, t in tensors.items()}
        keep = {i.name: tensors[i.name] for i in program.inputs if i.persistent or (i.source == "state" and k == 0)}
        tensors = build_inputs(program.inputs, lib, values[k], keep)
        for spec in program.inputs:
            if spec.source == "state":
                holder[spec.name] = tensors[spec.name]
            if spec.requires_grad and spec.persistent:
                tensors[spec.name].grad = None  # each call's gradients, not their sum
        args = [tensors[i.name] for i in program.inputs if i.source == "arg"]
        record = CallResult()
        if lib is MODEL:
            MODE.grad, MODE.tape = True, None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = _call(program, fn, args)
            outputs = tuple(result[:len(program.outputs)])
            for name, t in zip(program.outputs, outputs):
                record.outputs.append((name, _value(t), _dtype_name(t), _try(lambda: bool(t.requires_grad))))
        except Exception as error:  # noqa: BLE001 -- the error is part of the result
            kind = "RuntimeError" if isinstance(error, ModelError) else type(error).__name__
            record.error, record.message = classify_error(error), f"{kind}: {error}"
            outputs = ()
        _record_state(program, tensors, record)
        if lib is MODEL and gradients and record.error is None and program.backward != "none":
            point = {i.name: start[i.name] if i.persistent else values[k][i.name] for i in program.inputs
                     if not i.view}
            record.directions = _directional_derivatives(program, point, k)
        results.append(record)
    if outputs and results[-1].error is None:
        raised = []
        for i, (name, t) in enumerate(zip(program.outputs, outputs)):
            with lib.no_grad():
                if isinstance(_try(lambda: t.fill_(100.0 + i)), str):
                    raised.append(name)  # PyTorch's fill_ under no_grad never raises
        results[-1].probe_raised = tuple(raised)
        results[-1].probe = {name: _value(t) for name, t in list(zip(program.outputs, outputs)) +
                             list(tensors.items())}
    return results


# ============================================================================ finite differences
def _model_loss(program, arrays):
    """The program's loss at `arrays` (one per input), run in the model under the current tape."""
    namespace = namespace_for(program, MODEL)
    tensors = build_inputs(program.inputs, MODEL, arrays)
    target, _ = _target(program, namespace, tensors)
    MODE.grad = True
    result = target(*[tensors[i.name] for i in program.inputs if i.source == "arg"])
    if program.backward == "inside":
        return MODE.tape.loss
    return float(np.sum(result[-1]._array()))


def _at(point, direction, step):
    return {name: value.astype(np.float64) + step * direction.get(name, 0.0) for name, value in point.items()}


def _finite_difference(program, point, direction, tape):
    tape.replay()
    plus = _model_loss(program, _at(point, direction, FD_STEP))
    tape.replay()
    minus = _model_loss(program, _at(point, direction, -FD_STEP))
    return (plus - minus) / (2 * FD_STEP)


def _with_tape(program, point, work):
    tape = _Tape()
    MODE.tape = tape
    try:
        _model_loss(program, _at(point, {}, 0.0))
        return work(tape)
    finally:
        MODE.tape, MODE.grad = None, True


def _directional_derivatives(program, point, call):
    rng = np.random.default_rng([program.seed, call, 7])
    wrt = [i for i in program.inputs if i.requires_grad]

    def work(tape):
        out = []
        for _ in range(FD_DIRECTIONS):
            direction = {i.name: rng.standard_normal(i.shape) for i in wrt}
            out.append((direction, _finite_difference(program, point, direction, tape)))
        return out
    return _with_tape(program, point, work)


def full_gradients(program, point):
    """Elementwise finite-difference gradients of the loss for every input that requires grad."""
    def work(tape):
        grads = {}
        for spec in (i for i in program.inputs if i.requires_grad):
            grad = np.zeros(spec.shape)
            for index in np.ndindex(*spec.shape):
                unit = np.zeros(spec.shape)
                unit[index] = 1.0
                grad[index] = _finite_difference(program, point, {spec.name: unit}, tape)
            grads[spec.name] = grad
        return grads
    return _with_tape(program, point, work)


# ============================================================================ comparing
@dataclass
class Mismatch:
    call: int
    aspect: str  # the class of disagreement, e.g. 'missing error: saved_modified', 'output value'
    detail: str

    def __str__(self):
        return f"call {self.call + 1}: {self.aspect}: {self.detail}"


def _tolerance(dtype):
    return (1e-4, 1e-5) if dtype == "float32" else (1e-9, 1e-12)


def precision(program):
    """float64 when no float32 value takes part (then float64 tolerances apply), else float32."""
    if all(i.dtype == "float64" for i in program.inputs) and "float32" not in source(program):
        return "float64"
    return "float32"


def _close(got, expected, dtype):
    rtol, atol = _tolerance(dtype)
    return got.shape == expected.shape and np.allclose(got.astype(np.float64), expected.astype(np.float64),
                                                       rtol=rtol, atol=atol, equal_nan=True)


def _show(array):
    return np.array2string(np.asarray(array, dtype=np.float64), precision=4, suppress_small=True,
                           max_line_width=100).replace("\n", "\n    ")


def _value_mismatch(call, aspect, name, got, expected, dtype):
    if got.shape != expected.shape:
        return Mismatch(call, aspect, f"{name}: shape {list(got.shape)}, expected {list(expected.shape)}")
    if _close(got, expected, dtype):
        return None
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    where = np.unravel_index(np.nanargmax(np.where(np.isnan(diff), np.inf, diff)), diff.shape) if diff.ndim else ()
    return Mismatch(call, aspect, f"{name}: max |difference| at {[int(i) for i in where]}"
                                  f"\n    expected {_show(expected)}\n    got      {_show(got)}")


def _compare_gradients(k, program, expected, got):
    out = []
    for name, reference in expected.grads.items():
        value = got.grads.get(name)
        if (reference is None) != (value is None):
            out.append(Mismatch(k, "gradient None vs tensor", f"{name}.grad is "
                                f"{'None' if value is None else 'a tensor'}, expected "
                                f"{'None' if reference is None else 'a tensor'}"))
    rtol, atol = (1e-3, 1e-4) if precision(program) == "float32" else (1e-6, 1e-8)
    if expected.directions is not None:
        for direction, derivative in expected.directions:
            terms = [np.sum(np.asarray(got.grads[n], np.float64) * r) for n, r in direction.items()
                     if isinstance(got.grads.get(n), np.ndarray)]
            total, scale = sum(terms), sum(abs(t) for t in terms) + abs(derivative)
            if abs(total - derivative) > rtol * scale + atol:
                out.append(Mismatch(k, "gradient value", f"directional derivative {total:.6g} from the gradients, "
                                    f"{derivative:.6g} by finite differences"))
                break
    else:  # a reference with exact gradients (PyTorch)
        for name, reference in expected.grads.items():
            value = got.grads.get(name)
            if isinstance(reference, np.ndarray) and isinstance(value, np.ndarray):
                rtol, atol = _tolerance(precision(program))
                if value.shape != reference.shape or not np.allclose(value, reference, rtol=rtol * 10,
                                                                      atol=atol * 10):
                    out.append(_value_mismatch(k, "gradient value", f"{name}.grad", value, reference,
                                               "float32"))
    return out


def compare(program, expected, got):
    """The disagreements of `got` with `expected` (lists of CallResult), up to the first call
    with any (later calls would only repeat the consequences)."""
    tolerance = precision(program)
    for k, (ref, res) in enumerate(zip(expected, got)):
        out = []
        if ref.error != res.error:
            if res.error is None:
                out.append(Mismatch(k, f"missing error: {ref.error}", f"expected {ref.message}"))
            elif ref.error is None:
                out.append(Mismatch(k, f"unexpected error: {res.error}", res.message))
            else:
                out.append(Mismatch(k, f"wrong error: {res.error} instead of {ref.error}",
                                    f"got {res.message}\n    expected {ref.message}"))
            return out
        if len(ref.outputs) != len(res.outputs):
            return [Mismatch(k, "output count", f"{len(res.outputs)} outputs, expected {len(ref.outputs)}")]
        for (name, expected_value, dtype, rg), (_, value, got_dtype, got_rg) in zip(ref.outputs, res.outputs):
            if got_dtype != dtype:
                out.append(Mismatch(k, "output dtype", f"{name}: {got_dtype}, expected {dtype}"))
            mismatch = _value_mismatch(k, "output value", name, value, expected_value, tolerance)
            if mismatch:
                out.append(mismatch)
            if got_rg != rg:
                out.append(Mismatch(k, "output requires_grad", f"{name}.requires_grad: {got_rg}, expected {rg}"))
        for name, (expected_value, dtype, rg, leaf) in ref.state.items():
            value, _, got_rg, got_leaf = res.state[name]
            aspect = "input after error" if ref.error else "input after call"
            mismatch = _value_mismatch(k, f"{aspect}: value", name, value, expected_value, tolerance)
            if mismatch:
                out.append(mismatch)
            if (got_rg, got_leaf) != (rg, leaf):
                out.append(Mismatch(k, f"{aspect}: requires_grad/is_leaf", f"{name}: requires_grad={got_rg}, "
                                    f"is_leaf={got_leaf}; expected requires_grad={rg}, is_leaf={leaf}"))
        if ref.error is None and program.backward != "none":
            out.extend(_compare_gradients(k, program, ref, res))
        if ref.probe is not None and res.probe is not None and not out:
            if ref.probe_raised != res.probe_raised:
                return [Mismatch(k, "fill_ of a returned tensor raised", f"with no_grad: out.fill_(...) raised for "
                                 f"{list(res.probe_raised)}, expected for {list(ref.probe_raised)}")]
            for name, expected_value in ref.probe.items():
                mismatch = _value_mismatch(k, "aliasing of returned tensors", name, res.probe[name], expected_value,
                                           tolerance)
                if mismatch:
                    mismatch.detail = ("after writing 100+i into each returned tensor i under no_grad: "
                                       + mismatch.detail)
                    out.append(mismatch)
        if out:
            return out
    return []


def report(program, mismatches, runner):
    """A failure message: the runner, the program as PyTorch code, the disagreements."""
    lines = [f"{runner} disagrees with PyTorch's semantics (numpy reference model) on this program:", "",
             describe(program), ""]
    lines += [str(m) for m in mismatches]
    return "\n".join(lines)


# ============================================================================ minimizing
def _simpler(program):
    """Programs one step simpler than `program`: a statement, output, input or flag fewer."""
    p = program

    def variant(**changes):
        fields = dict(form=p.form, inputs=p.inputs, body=p.body, outputs=p.outputs, loss_terms=p.loss_terms,
                      backward=p.backward, seed=p.seed)
        fields.update(changes)
        return Program(**fields)

    body = list(p.body)
    for i, stmt in enumerate(body):
        yield variant(body=tuple(body[:i] + body[i + 1:]))
        if stmt.body:
            yield variant(body=tuple(body[:i] + list(stmt.body) + body[i + 1:]))
            for j in range(len(stmt.body)):
                inner = stmt.body[:j] + stmt.body[j + 1:]
                block = [Stmt(stmt.code, stmt.op, inner)] if inner else []
                yield variant(body=tuple(body[:i] + block + body[i + 1:]))
    if p.backward != "none":
        yield variant(loss_terms=(), backward="none")
    for name in p.outputs:
        if len(p.outputs) > 1:
            terms = tuple(t for t in p.loss_terms if t != name)
            yield variant(outputs=tuple(o for o in p.outputs if o != name), loss_terms=terms,
                          backward=p.backward if terms else "none")
    text = source(p)
    for spec in p.inputs:
        if len(re.findall(rf"\b{spec.name}\b", text)) <= {"param": 3, "buffer": 3, "state": 2}.get(spec.source, 1):
            yield variant(inputs=tuple(i for i in p.inputs if i is not spec))
        if spec.requires_grad and spec.source in ("arg", "state"):
            flipped = replace(spec, requires_grad=False)
            yield variant(inputs=tuple(flipped if i is spec else i for i in p.inputs))
    if p.form != "function":
        yield variant(form="function", inputs=tuple(
            replace(i, source="arg", fresh=True, requires_grad=i.requires_grad or i.source == "param")
            for i in p.inputs))


def well_defined(program):
    """The reference model runs the program without a Python error or an Unsupported case."""
    try:
        results = run_program(program, MODEL)
    except Exception:  # noqa: BLE001 -- e.g. an output name whose statement was deleted
        return False
    return not any(r.error and r.error.startswith("other:") for r in results)


def minimize(program, still_fails, budget_s=20.0):
    """Greedily simplify `program` while still_fails(candidate) holds, for at most budget_s seconds."""
    deadline = time.monotonic() + budget_s
    progress = True
    while progress and time.monotonic() < deadline:
        progress = False
        for candidate in _simpler(program):
            if time.monotonic() > deadline:
                break
            if well_defined(candidate) and still_fails(candidate):
                program, progress = candidate, True
                break
    return program
