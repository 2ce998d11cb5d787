"""`Tensor`: a numpy array with autograd state, and the in-place machinery.

The class holds the data and the autograd fields; the operations live in the op modules
(math_ops, reductions, shape_ops, indexing, linalg) and are attached as methods by
`tensor_methods`. Every computing method binds a primitive through the one dispatcher.
"""
import weakref

import numpy as np

from ember import dtypes
from .dispatch import STATE


class Size(tuple):
    """The shape of a tensor: a tuple that prints like torch.Size."""

    def __repr__(self):
        return f"ember.Size([{', '.join(str(d) for d in self)}])"

    def numel(self):
        n = 1
        for d in self:
            n *= d
        return n


class Device:
    """`ember.device('cpu')`. ember's eager tensors live in host memory; 'cuda' names the GPU
    backend's device for compiled programs."""

    def __init__(self, kind="cpu", index=None):
        if isinstance(kind, Device):
            kind, index = kind.type, kind.index
        kind = str(kind)
        if ":" in kind:
            kind, number = kind.split(":")
            index = int(number)
        if kind not in ("cpu", "cuda", "mps", "meta"):
            raise RuntimeError(f"Expected one of cpu, cuda, mps, meta device type at start of device string: {kind}")
        self.type = kind
        self.index = index

    def __repr__(self):
        return f"device(type='{self.type}'" + (f", index={self.index})" if self.index is not None else ")")

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):
            other = Device(other)
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


CPU = Device("cpu")


class Tensor:
    """An n-dimensional array with autograd. Construct with `ember.tensor(data)`; the legacy
    `ember.Tensor(2, 3)` (uninitialised float tensor of that size) and `ember.Tensor([1, 2])`
    (float tensor from data) work as in PyTorch."""

    # defaults kept on the class so that wrapping an array sets one attribute
    requires_grad = False
    grad = None
    grad_fn = None
    _version = 0
    _node = None  # the IR value while tracing
    _hooks = None
    __array_priority__ = 1000  # numpy defers to Tensor's reflected operators

    def __init__(self, *args, dtype=None, device=None, requires_grad=False):
        from .creation import legacy_constructor_data
        self._data = legacy_constructor_data(args, dtype)
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _wrap(array):
        t = object.__new__(Tensor)
        t._data = array
        if STATE.recorder is not None:
            t._born = STATE.recorder  # created while tracing: a constant of the trace, not external state
        return t

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self):
        return Size(self._data.shape)

    def size(self, dim=None):
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[_dim(dim, self._data.ndim, "size")]

    @property
    def dtype(self):
        return dtypes.from_numpy(self._data.dtype)

    @property
    def device(self):
        return CPU

    @property
    def is_cuda(self):
        return False

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    ndimension = dim

    def numel(self):
        return int(self._data.size)

    nelement = numel

    def element_size(self):
        return self._data.itemsize

    @property
    def itemsize(self):
        return self._data.itemsize

    @property
    def nbytes(self):
        return int(self._data.nbytes)

    def is_floating_point(self):
        return self._data.dtype.kind == "f"

    def is_contiguous(self):
        return bool(self._data.flags.c_contiguous)

    def stride(self, dim=None):
        strides = tuple(s // self._data.itemsize for s in self._data.strides)
        return strides if dim is None else strides[_dim(dim, self._data.ndim, "stride")]

    def data_ptr(self):
        return self._data.ctypes.data

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __hash__(self):
        return id(self)

    # ------------------------------------------------------------------ data access
    @property
    def data(self):
        """The same storage without autograd history (PyTorch's `.data`)."""
        return self.detach()

    @data.setter
    def data(self, value):
        self._data = value._data if isinstance(value, Tensor) else np.asarray(value)
        self._version += 1

    def detach(self):
        out = Tensor._wrap(self._data)
        out._node = self._node
        return out

    def detach_(self):
        self.grad_fn = None
        self.requires_grad = False
        return self

    def numpy(self, force=False):
        if self.requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        _observe(self, "numpy()")
        return self._data

    def item(self):
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar")
        _observe(self, "item()")
        return self._data.reshape(()).item()

    def tolist(self):
        _observe(self, "tolist()")
        return self._data.tolist()

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous "
                               f"(shape {list(self._data.shape)}); use .any() or .all()")
        _observe(self, "bool()")
        return bool(self._data.reshape(()))

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        _observe(self, "numpy()")
        data = self._data
        return data if dtype is None else data.astype(dtype)

    # ------------------------------------------------------------------ autograd
    def requires_grad_(self, requires_grad=True):
        if requires_grad and self._data.dtype.kind != "f":
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients "
                               f"(got {self.dtype})")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If you want to "
                               "use a computed variable in a subgraph that doesn't require differentiation "
                               "use var_no_grad = var.detach().")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        if self.grad_fn is None:
            if not self.requires_grad:
                raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
            return
        self.grad_fn.retain = True
        if self.grad_fn.out_ref is None:
            self.grad_fn.out_ref = weakref.ref(self)

    @property
    def retains_grad(self):
        return self.grad_fn is not None and self.grad_fn.retain

    def register_hook(self, hook):
        """Call `hook(grad)` when this tensor's gradient is computed; a returned tensor replaces it."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            hooks = self.grad_fn.hooks = self.grad_fn.hooks or []
        else:
            hooks = self._hooks = self._hooks or []
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        from .autograd import backward
        backward(self, gradient, retain_graph, create_graph, inputs)

    # ------------------------------------------------------------------ in-place machinery
    def _alias(self):
        """A new tensor object standing for this one's current value and history (in-place ops
        record against it, so the node keeps seeing the value from before the update)."""
        alias = Tensor._wrap(self._data)
        alias.requires_grad = self.requires_grad
        alias.grad_fn = self.grad_fn
        alias._version = self._version
        recorder = STATE.recorder
        alias._node = self._node if recorder is None else (recorder, recorder.node_of(self))
        return alias

    def _inplace(self, compute, op_name):
        """Run `compute(current) -> new value` and make it this tensor's value, as PyTorch's
        in-place ops do: history is rebound when recorded, memory is written otherwise."""
        recording = STATE.recorder is not None or (STATE.grad_enabled and self.requires_grad)
        if STATE.grad_enabled and self.requires_grad and self.grad_fn is None and STATE.recorder is None:
            raise RuntimeError(f"{op_name}: a leaf Variable that requires grad is being used in an in-place "
                               f"operation (shape {list(self.shape)}, {self.dtype}); wrap it in "
                               f"`with ember.no_grad():` or use the out-of-place form")
        current = self._alias() if recording else self
        result = compute(current)
        if not recording and result.requires_grad:
            recording = True  # an operand that requires grad made the result differentiable
        if result._data.dtype != self._data.dtype:
            if dtypes.promote(result.dtype, self.dtype) is not self.dtype:
                raise RuntimeError(f"{op_name}: result type {result.dtype} can't be cast to the desired "
                                   f"output type {self.dtype}")
            from .math_ops import to_dtype
            result = to_dtype(result, self.dtype)
        if result._data.shape != self._data.shape:
            raise RuntimeError(f"{op_name}: output with shape {list(self.shape)} doesn't match the "
                               f"broadcast shape {list(result.shape)}")
        if recording:
            self._data = result._data
            self.grad_fn = result.grad_fn
            self.requires_grad = result.requires_grad or self.requires_grad
            self._node = result._node
        else:
            if not self._data.flags.writeable:
                self._data = np.array(self._data)  # a broadcast or read-only view: own the memory
            np.copyto(self._data, result._data)
        self._version += 1
        return self

    # ------------------------------------------------------------------ printing
    def __repr__(self):
        from .printing import tensor_repr
        return tensor_repr(self)

    def __format__(self, spec):
        if self._data.ndim == 0:
            return format(self.item(), spec)  # f"{loss:.3f}" and f"{t}" of a 0-d tensor, as in PyTorch
        if spec:
            raise TypeError(f"unsupported format string {spec!r} for a tensor of shape {list(self.shape)}; "
                            "format 0-d tensors or call .tolist()")
        return repr(self)

    def __reduce_ex__(self, protocol):
        return (_rebuild, (self._data, self.requires_grad))

    def __deepcopy__(self, memo):
        if self.grad_fn is not None:
            raise RuntimeError("Only Tensors created explicitly by the user (graph leaves) support the "
                               "deepcopy protocol at the moment")
        out = Tensor._wrap(self._data.copy())
        out.requires_grad = self.requires_grad
        if self.grad is not None:
            out.grad = self.grad.__deepcopy__(memo)
        memo[id(self)] = out
        return out


def _rebuild(data, requires_grad):
    t = Tensor._wrap(data)
    t.requires_grad = requires_grad
    return t


class _HookHandle:
    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def _observe(tensor, how):
    """A tensor's value flows into Python: while tracing, that is a guard."""
    recorder = STATE.recorder
    if recorder is not None:
        recorder.observe(tensor, how)


def _dim(dim, ndim, op):
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of "
                         f"[{-max(ndim, 1)}, {max(ndim, 1) - 1}], but got {dim})")
    return dim % max(ndim, 1)
