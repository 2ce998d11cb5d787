"""`Parameter`: a Tensor that a Module registers as a learnable weight (ember.nn.parameter).

A Parameter shares its source tensor's numpy array, is always a leaf and prints as
"Parameter containing:\\ntensor(...)". Every Tensor operation accepts it, since ops read
`._data` and produce plain Tensors.
"""
import numpy as np

from ember.frontend.tensor import Tensor


class Parameter(Tensor):
    """`nn.Parameter(tensor, requires_grad=True)`: registered by `Module.__setattr__`."""

    def __new__(cls, data=None, requires_grad=True):
        if data is None:
            data = Tensor._wrap(np.empty((0,), dtype=np.float32))
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: expected a Tensor, got {type(data).__name__}")
        param = object.__new__(cls)
        param._data = data._data
        if requires_grad:
            param.requires_grad_(True)  # raises for integer tensors, as in torch
        return param

    def __init__(self, data=None, requires_grad=True):
        pass  # everything happens in __new__ (Tensor.__init__ builds from Python data)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        from ember.frontend.device_tensors import copy_array
        out = Parameter(Tensor._wrap(copy_array(self._data)), self.requires_grad)
        if self.grad is not None:
            out.grad = self.grad.__deepcopy__(memo)
        memo[id(self)] = out
        return out

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (np.array(self._data), self.requires_grad, str(self.device)))


def _rebuild_parameter(data, requires_grad, device="cpu"):
    from ember.frontend.tensor import _rebuild
    return Parameter(_rebuild(data, False, device), requires_grad)

