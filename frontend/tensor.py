"""`Tensor`: a numpy array with autograd state, and the in-place machinery.

The class holds the data and the autograd fields; the operations live in the op modules
(math_ops, reductions, shape_ops, indexing, linalg) and are attached as methods by
`tensor_methods`. Every computing method binds a primitive through the one dispatcher.
"""
import weakref

import numpy as np

from ember import dtypes
from ember.ops import in_mode
from ember.runtime import device_arrays
from ember.runtime.device_arrays import device_of
from .dispatch import STATE, run_eagerly
from . import views


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
    """`ember.device('cpu')`, `ember.device('cuda')`: where a tensor's memory is (see
    frontend/device_tensors.py; a tensor's `.device` is read from its memory)."""

    def __init__(self, kind="cpu", index=None):
        if isinstance(kind, Device):
            kind, index = kind.type, kind.index
        elif isinstance(kind, int) and not isinstance(kind, bool):  # ember.device(0): cuda:0, as in PyTorch
            kind, index = "cuda", kind
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
CUDA = Device("cuda", 0)


class Tensor:
    """An n-dimensional array with autograd. Construct with `ember.tensor(data)`; the legacy
    `ember.Tensor(2, 3)` (uninitialised float tensor of that size) and `ember.Tensor([1, 2])`
    (float tensor from data) work as in PyTorch."""

    # defaults kept on the class so that wrapping an array sets one attribute
    requires_grad = False
    _grad = None  # (the `grad` property's value: reading `_grad` tells no tracer)
    grad_fn = None
    _node = None  # the IR value while tracing
    _born = None  # the tracer that was recording when this tensor was made (a constant of that trace)
    _operand = False  # a Python number wrapped for one op alone (math_ops.operand): never the caller's
    _hooks = None
    _post_accumulate_hooks = None
    _accumulator = None  # a leaf's AccumulateGrad node, made when first needed
    # aliasing (see ember.frontend.views): the root a view or alias shares memory with, the
    # steps that derive it from that root, whether autograd is cut there (detach, .data),
    # and the version counter shared with the root
    _base = None
    _view_chain = ()
    _detached = False
    _vc = None
    _aliases = None  # on a root: weak references to its live views and aliases
    _creation = None  # how a view was made, when PyTorch limits in-place ops on it: "no_grad", "multi_output"
    _output_nr, _created_by = 0, None  # a multi-output view's place among its op's outputs, and the op
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

    @property
    def grad(self):
        """The gradient backward() accumulated here, None until then. While ember.compile traces,
        the read is noted (Tracer.read_grad): where the code could have done otherwise with or
        without a .grad, the program holds only while this tensor has, or has not, one."""
        grad = self._grad
        recorder = STATE.recorder
        if recorder is not None:
            recorder.read_grad(self, grad)
        return grad

    @grad.setter
    def grad(self, value):
        recorder = STATE.recorder
        if recorder is not None:  # (a .grad the traced call sets to None: compiled_results.clear_grads)
            recorder.wrote_grad(self, value)
        self._grad = value

    @grad.deleter
    def grad(self):
        self.grad = None

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self):
        recorder = STATE.recorder
        if recorder is not None and recorder.size_symbols:  # (a trace making dims dynamic: sizes it can watch)
            return Size(recorder.watched_sizes(self._data.shape))
        return Size(self._data.shape)

    def size(self, dim=None):
        if dim is None:
            return self.shape
        recorder = STATE.recorder
        size = self._data.shape[_dim(dim, self._data.ndim, "size")]
        if recorder is not None and recorder.size_symbols:
            return recorder.watched_sizes((size,))[0]
        return size

    @property
    def dtype(self):
        return dtypes.from_numpy(self._data.dtype)

    @property
    def device(self):
        return CPU if not device_arrays.in_use or device_of(self._data) is None else CUDA

    def get_device(self):
        """-1 on the CPU, the device index on a GPU (PyTorch's)."""
        return 0 if self.is_cuda else -1

    @property
    def is_cuda(self):
        return device_arrays.in_use and device_of(self._data) is not None

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
        recorder = STATE.recorder
        if recorder is not None and recorder.size_symbols:  # (a product of watched sizes: see `shape`)
            return self.shape.numel()
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
        return dtypes.is_floating_np(self._data.dtype)

    def is_contiguous(self):
        return bool(self._data.flags.c_contiguous)

    def stride(self, dim=None):
        strides = tuple(s // self._data.itemsize for s in self._data.strides)
        return strides if dim is None else strides[_dim(dim, self._data.ndim, "stride")]

    def data_ptr(self):
        return self._data.ctypes.data

    def storage_offset(self):
        """Elements between the start of the memory this tensor shares and its first element."""
        owner = views.memory_owner(self._data)
        start = owner.__array_interface__["data"][0] if isinstance(owner, np.ndarray) else self._data.ctypes.data
        return (self._data.ctypes.data - start) // self._data.itemsize

    def _is_view(self):
        return self._base is not None and not self._detached

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        recorder = STATE.recorder
        if recorder is not None and recorder.size_symbols:  # (Python makes len() a plain int: a use
            return int(recorder.watched_sizes(self._data.shape[:1])[0])  # of the size it cannot follow)
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __hash__(self):
        return id(self)

    # ------------------------------------------------------------------ data access
    @property
    def _version(self):
        """How many in-place writes this tensor's memory has seen (shared with its views)."""
        counter = self._vc
        return 0 if counter is None else counter.value

    @property
    def data(self):
        """The same storage without autograd history, and with a version counter of its own so
        that its in-place updates go unseen by autograd (PyTorch's `.data`)."""
        alias = views.make_alias(self, share_version=False)
        if STATE.recorder is not None:
            STATE.recorder.record_alias(alias, self)
        return alias

    @data.setter
    def data(self, value):
        value = value if isinstance(value, Tensor) else Tensor._wrap(np.asarray(value))
        recorder = STATE.recorder
        if recorder is not None:
            recorder.record_data_assignment(self, value)
        self._data = value._data
        self._base, self._view_chain, self._detached, self._creation = None, (), False, None  # no longer a view

    def detach(self):
        """The same memory and version counter, cut from autograd."""
        alias = views.make_alias(self, share_version=True)
        if STATE.recorder is not None:
            STATE.recorder.record_alias(alias, self)
        return alias

    def detach_(self):
        if self._base is not None and not self._detached:
            raise RuntimeError("Can't detach views in-place. Use detach() instead. (detach_ on a view of shape "
                               f"{list(self.shape)} of a tensor of shape {list(self._base.shape)})")
        run_eagerly("detaches a tensor in place (detach_)")
        self.grad_fn = None
        self.requires_grad = False
        return self

    def numpy(self, force=False):
        if force and self.is_cuda:  # (a host copy, as PyTorch's force=True makes)
            return np.array(self._data)
        if self.requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if self.is_cuda:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
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
        if self.is_cuda:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
        _observe(self, "numpy()")
        data = self._data
        return data if dtype is None else data.astype(dtype)

    # ------------------------------------------------------------------ autograd
    def requires_grad_(self, requires_grad=True):
        if requires_grad and not dtypes.is_floating_np(self._data.dtype):
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients "
                               f"(got {self.dtype})")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If you want to "
                               "use a computed variable in a subgraph that doesn't require differentiation "
                               "use var_no_grad = var.detach().")
        if requires_grad and not self.requires_grad:
            run_eagerly("makes a tensor require grad inside the function (a leaf of its own)")
        self.requires_grad = bool(requires_grad)
        if requires_grad and self._base is None:
            for view in views.live_aliases(self):  # as in PyTorch, a view requires grad when its base does
                if not view._detached:
                    view.requires_grad = True
        return self

    def retain_grad(self):
        run_eagerly("calls retain_grad()")
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
        run_eagerly("registers a tensor hook (register_hook)")
        if self.grad_fn is not None:
            hooks = self.grad_fn.hooks = self.grad_fn.hooks or []
        else:
            hooks = self._hooks = self._hooks or []
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call `hook(self)` after a backward pass has accumulated this leaf's `.grad`."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        run_eagerly("registers a post-accumulate-grad hook")
        hooks = self._post_accumulate_hooks = self._post_accumulate_hooks or []
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        from .autograd import backward
        backward(self, gradient, retain_graph, create_graph, inputs)

    # ------------------------------------------------------------------ in-place machinery
    def _inplace(self, compute, op_name, operands=(), refuse_full_overlap=False, internal_overlap=True):
        """Run `compute(self) -> new value` and write it into this tensor's memory, as PyTorch's
        in-place ops do: views and the base see the write, the shared version counter moves
        (so autograd's saved tensors are checked), autograd history is rebased onto the root
        when this tensor is a view (CopySlices), and a tracer records a functional update.
        `operands` (the op's arguments; tensors among them are checked) must not partially
        overlap this tensor's memory, nor overlap it at all with `refuse_full_overlap`. Ops that
        write one value everywhere (fill_, zero_) pass `internal_overlap=False`: they may write
        an expanded tensor, as in PyTorch."""
        state = STATE
        # the logical ops have no derivative in PyTorch: their in-place forms leave autograd
        # alone (a leaf that requires grad may be written, a tensor keeps its history)
        grad_mode = state.grad_enabled and op_name not in _OUTSIDE_AUTOGRAD
        self._check_writable(op_name, grad_mode, internal_overlap)
        if operands:
            data = self._data
            for operand in operands:
                if isinstance(operand, Tensor) and (operand._data.base is not None or data.base is not None
                                                    or refuse_full_overlap):
                    views.refuse_overlap(self, operand, op_name, refuse_full_overlap)
        current = self._current_value(grad_mode)
        previous_target, state.inplace_target = state.inplace_target, current
        try:
            result = compute(current)
        finally:
            state.inplace_target = previous_target
        if result is current:  # nothing computed (e.g. an in-place no-op)
            views.bump_version(self)
            return self
        if result._data.dtype != self._data.dtype:
            result = _cast_for_inplace(result, self, op_name)
        if result._data.shape != self._data.shape:
            raise RuntimeError(f"{op_name}: output with shape {list(self.shape)} doesn't match the "
                               f"broadcast shape {list(result.shape)}")
        autograd_view = self._base is not None and not self._detached
        root = self._base if autograd_view else self
        records_history = grad_mode and (result.requires_grad or root.requires_grad)
        if records_history and self._creation is not None:
            self._check_view_rebase(op_name)
        if records_history and not result.requires_grad:
            result = _keeping_history(result, self)  # e.g. fill_ on a tensor with history: zero gradient
        new_root = None
        if records_history and autograd_view:
            with _tracer_paused(state):
                new_root = views.scatter_into_base(root, self._view_chain, result)
                if self._data.ndim and views.has_internal_overlap(self._data):
                    # (fill_ of an expanded view: PyTorch's backward of the write raises)
                    from .autograd import fails_backward
                    new_root = fails_backward(new_root, str(internal_overlap_error(op_name, self._data)))
        recorder = state.recorder
        if recorder is not None:
            recorder.before_write(self)
        if result._data is not self._data:
            try:
                np.copyto(self._data, result._data)
            except ValueError:  # read-only: an expanded view (checked writable by _check_writable)
                np.copyto(views.writable(self._data), result._data)
        views.bump_version(self)
        if records_history:
            _rebase_history(self, root, result, new_root if new_root is not None else result)
        if recorder is not None:
            recorder.record_write(self, result, records_history)
        return self

    def _current_value(self, grad_mode):
        """A stand-in for this tensor's value before an in-place op writes it: same memory,
        history and version counter, a distinct object (so `y.mul_(y)` tells self from other).
        (Without grad mode nothing reads its history, which a StaleView may not give.)"""
        current = Tensor._wrap(self._data)
        current.requires_grad = self.requires_grad
        if grad_mode:
            current.grad_fn = self.grad_fn
        current._vc = views.version_counter(self)
        current._base, current._view_chain, current._detached = self._base, self._view_chain, self._detached
        recorder = STATE.recorder
        if recorder is not None:
            current._node = (recorder, recorder.node_of(self))
        return current

    def _check_view_rebase(self, op_name):
        """PyTorch's refusal of in-place ops that autograd would record on a view made under
        no_grad or by split/chunk/unbind: its history could not be rebased."""
        if self._creation is not None:
            raise RuntimeError(f"{op_name}: {view_rebase_message(self, indirect=False)}")

    def _check_writable(self, op_name, grad_mode, internal_overlap=True):
        if grad_mode:
            if self._creation is not None and self.requires_grad:
                self._check_view_rebase(op_name)
            base = self._base
            if base is not None and not self._detached and base.requires_grad and base.grad_fn is None:
                raise leaf_view_write_error(op_name, self.shape, base)
            if self.requires_grad and self.grad_fn is None:
                raise RuntimeError(f"{op_name}: a leaf Variable that requires grad is being used in an "
                                   f"in-place operation (shape {list(self.shape)}, {self.dtype}); wrap it "
                                   f"in `with ember.no_grad():` or use the out-of-place form")
        data = self._data
        if internal_overlap and data.ndim and views.has_internal_overlap(data):
            raise internal_overlap_error(op_name, data)
        if not data.flags.writeable:
            if self._base is None:
                self._data = np.array(data)  # read-only memory from numpy: own a copy
            elif views.writable(data) is None:
                raise RuntimeError(f"{op_name}: the tensor (shape {list(self.shape)}) is a read-only view; "
                                   f"clone() it before writing")

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
        return (_rebuild, (np.array(self._data), self.requires_grad, str(self.device)))

    def __deepcopy__(self, memo):
        if self.grad_fn is not None:
            raise RuntimeError("Only Tensors created explicitly by the user (graph leaves) support the "
                               "deepcopy protocol at the moment")
        from .device_tensors import copy_array
        out = Tensor._wrap(copy_array(self._data))
        out.requires_grad = self.requires_grad
        if self.grad is not None:
            out.grad = self.grad.__deepcopy__(memo)
        memo[id(self)] = out
        return out


def _cast_for_inplace(result, target, op_name):
    """An in-place result in the target's dtype. PyTorch casts down within a category
    (float64 into float32) but never from a higher category (float into an integer tensor)."""
    if result.dtype.category > target.dtype.category:
        raise RuntimeError(f"{op_name}: result type {result.dtype} can't be cast to the desired output type "
                           f"{target.dtype}")
    from .math_ops import to_dtype
    return to_dtype(result, target.dtype)




def _keeping_history(result, target):
    """`result`'s value connected to `target`'s history with a zero gradient (PyTorch keeps the
    history of a tensor overwritten in place, e.g. by fill_ or copy_ of a constant)."""
    from .math_ops import where
    keep = Tensor._wrap(np.ones((), dtype=bool))
    return where(keep, result, target)


_OUTSIDE_AUTOGRAD = frozenset(("logical_and_", "logical_or_", "logical_xor_", "logical_not_"))


def _rebase_history(written, root, result, new_root):
    """After an in-place write of `result` into `written` (the root itself, or one of its views):
    the root takes `new_root`'s history and every live view of it is re-derived from the root,
    but for the views PyTorch cannot re-derive (`views.bump_version` made them StaleViews)."""
    root.grad_fn = new_root.grad_fn
    root.requires_grad = True
    node = result.grad_fn
    if node is not None:
        node.output_written_into(written)  # a VJP reading the op's output reads `written`'s memory
    with _tracer_paused(STATE):
        for alias in views.live_aliases(root):
            if alias._detached:
                continue
            if alias._creation is None:
                derived = views.replay(alias._view_chain, root)
                alias.grad_fn = derived.grad_fn
                alias.requires_grad = derived.requires_grad
            else:
                alias.requires_grad = True  # as its base, whose history it cannot take


def internal_overlap_error(op_name, array):
    strides = [s // array.itemsize for s in array.strides]
    return RuntimeError(f"{op_name}: unsupported operation: more than one element of the written-to tensor "
                        f"(shape {list(array.shape)}, strides {strides}) refers to a single memory location. "
                        f"Please clone() the tensor before performing the operation.")


def leaf_view_write_error(op_name, view_shape, leaf):
    return RuntimeError(f"{op_name}: a view of a leaf Variable that requires grad is being used in an "
                        f"in-place operation (view {list(view_shape)} of a leaf {list(leaf.shape)}, {leaf.dtype})")


def view_rebase_message(view, indirect):
    """PyTorch's message (handle_view_on_rebase) for a view made under no_grad or by a
    multi-output op (split, chunk, unbind) that is written in place with autograd recording
    (`indirect=False`), or whose history is read after its memory was written (`indirect=True`)."""
    fn = view.__dict__.get("grad_fn")
    modified = "its base or another view of its base has been" if indirect else "is being"
    name = view._created_by or (fn.name().removesuffix("Backward0") if fn is not None else None)
    if view._creation == "no_grad" or fn is None:
        prefix = (f"Output {view._output_nr} of {name} is a view of a view which was created in" if fn is not None
                  else "A view was created in")
        message = f"{prefix} no_grad mode and {modified} modified inplace with grad mode enabled."
    else:
        message = f"Output {view._output_nr} of {name} is a view and {modified} modified inplace."
    if view._creation == "multi_output":
        message += (" This view is the output of a function that returns multiple views. Such functions do not "
                    "allow the output views to be modified inplace. You should replace the inplace operation by "
                    "an out-of-place one.")
    else:
        message += (" Given that this use case is ambiguous and error-prone, it is forbidden. You can clarify "
                    "your code by moving both the view and the inplace either both inside the no_grad block (if "
                    "you don't want the inplace to be tracked) or both outside (if you want the inplace to be "
                    "tracked).")
    base = view._base
    return message + f" (view of shape {list(view.shape)}, base of shape {list(base.shape)}, {view.dtype})"


class StaleView(Tensor):
    """A view whose memory was written since it was made, when PyTorch cannot re-derive its
    history: an output of split, chunk or unbind, or a view made under no_grad. Reading its
    `grad_fn` (any grad-mode op on it, backward, `is_leaf`) raises PyTorch's error once it has
    or should have history. `views.bump_version` gives such views this class, so that ordinary
    tensors pay nothing for the check."""

    @property
    def grad_fn(self):
        fn = self.__dict__.get("grad_fn")
        if self._creation is not None and (fn is not None or self._base.requires_grad):
            raise RuntimeError(view_rebase_message(self, indirect=True))
        return fn

    @grad_fn.setter
    def grad_fn(self, fn):
        self.__dict__["grad_fn"] = fn

    def __repr__(self):
        try:
            return super().__repr__()
        except RuntimeError:  # as PyTorch prints it
            shown = Tensor._wrap(self._data)
            shown.requires_grad, shown.grad_fn = True, _INVALID_HISTORY
            return repr(shown)


class _InvalidHistory:
    def name(self):
        return "Invalid"


_INVALID_HISTORY = _InvalidHistory()


def _tracer_paused(state):
    """Eager-only work inside traced code (autograd bookkeeping the graph does not need)."""
    return in_mode(None)


def _rebuild(data, requires_grad, device="cpu"):
    """An unpickled tensor, on the device it was pickled from (as PyTorch's)."""
    if device != "cpu":
        from .device_tensors import place, runtime_device
        data = place(data, runtime_device(device))
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
