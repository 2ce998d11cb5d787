"""What a node saved, as its VJP sees it once it can no longer be read (frontend/autograd.py,
Node.unpack_inputs and saved_output): overwritten in place since (`ModifiedValue`), or freed by
a backward without retain_graph (`FreedValue`). Shape and dtype stay readable, so a VJP that
needs none of the values (add's, slice's) still runs; reading a value raises PyTorch's error."""
from .dispatch import FreedValueError, ModifiedTensorError


class ModifiedValue:
    """Stands for a saved array that an in-place op has since overwritten: its shape and dtype
    can be read, and any use of its values raises the error PyTorch gives."""

    __slots__ = ("shape", "dtype", "ndim", "size", "itemsize", "message")
    __array_priority__ = 10 ** 6

    def __init__(self, array, message):
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.size, self.itemsize = array.size, array.itemsize
        self.message = message

    def _refuse(self, *args, **kwargs):
        raise ModifiedTensorError(self.message)

    __array__ = __array_function__ = __getitem__ = __float__ = __int__ = __bool__ = _refuse
    __len__ = __iter__ = _refuse

    def __array_ufunc__(self, *args, **kwargs):
        raise ModifiedTensorError(self.message)

    def __getattr__(self, name):
        raise ModifiedTensorError(self.message)


class FreedValue(ModifiedValue):
    """Stands for a value a node saved, freed by a backward without retain_graph: reading it
    raises PyTorch's RuntimeError (Node.unpack_inputs)."""

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise FreedValueError(self.message)

    __array__ = __array_function__ = __getitem__ = __float__ = __int__ = __bool__ = _refuse
    __len__ = __iter__ = __array_ufunc__ = __getattr__ = _refuse


for _op in ("add", "sub", "mul", "truediv", "floordiv", "pow", "mod", "matmul", "lt", "le", "gt", "ge",
            "and", "or", "xor", "neg", "abs"):
    for _name in (f"__{_op}__", f"__r{_op}__"):
        setattr(ModifiedValue, _name, ModifiedValue._refuse)
        setattr(FreedValue, _name, FreedValue._refuse)
