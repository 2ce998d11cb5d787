"""Activation layers (torch.nn.ReLU, GELU, Softmax, ...): thin modules over nn.functional."""
from ember.frontend.creation import full
from . import functional as F
from .linear import factory
from .module import Module
from .parameter import Parameter


class _Inplace(Module):
    """An activation whose only option is `inplace` (repr "ReLU()" or "ReLU(inplace=True)")."""

    function = None

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return type(self).function(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Inplace):
    function = staticmethod(F.relu)


class ReLU6(_Inplace):
    function = staticmethod(F.relu6)


class SiLU(_Inplace):
    function = staticmethod(F.silu)


class Mish(_Inplace):
    function = staticmethod(F.mish)


class Hardswish(_Inplace):
    function = staticmethod(F.hardswish)

    def extra_repr(self):
        return ""  # (PyTorch's repr leaves out inplace here)


class Hardsigmoid(_Inplace):
    function = staticmethod(F.hardsigmoid)

    def extra_repr(self):
        return ""  # (PyTorch's repr leaves out inplace here)


class SELU(_Inplace):
    function = staticmethod(F.selu)


class _Stateless(Module):
    """An activation without options (repr "Sigmoid()")."""

    function = None

    def forward(self, input):
        return type(self).function(input)


class Sigmoid(_Stateless):
    function = staticmethod(F.sigmoid)


class Tanh(_Stateless):
    function = staticmethod(F.tanh)


class Softsign(_Stateless):
    function = staticmethod(F.softsign)


class LogSigmoid(_Stateless):
    function = staticmethod(F.logsigmoid)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, input):
        return F.elu(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class CELU(ELU):
    def forward(self, input):
        return F.celu(input, self.alpha, self.inplace)


class Hardtanh(Module):
    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        self.min_val = min_val
        self.max_val = max_val
        self.inplace = inplace

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class Threshold(Module):
    def __init__(self, threshold, value, inplace=False):
        super().__init__()
        self.threshold = threshold
        self.value = value
        self.inplace = inplace

    def forward(self, input):
        return F.threshold(input, self.threshold, self.value, self.inplace)

    def extra_repr(self):
        return f"threshold={self.threshold}, value={self.value}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input):
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class PReLU(Module):
    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = num_parameters
        self.init = init
        self.weight = Parameter(full((num_parameters,), init, dtype=factory(dtype)))

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class _SoftmaxLike(Module):
    function = None

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return type(self).function(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_SoftmaxLike):
    function = staticmethod(F.softmax)


class LogSoftmax(_SoftmaxLike):
    function = staticmethod(F.log_softmax)


class Softmin(_SoftmaxLike):
    function = staticmethod(F.softmin)


class GLU(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.glu(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"
