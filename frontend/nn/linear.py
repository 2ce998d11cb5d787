"""Fully connected layers: Identity, Linear, Bilinear (torch.nn.Linear and friends)."""
import math

from ember import dtypes
from ember.frontend.creation import empty
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


def factory(dtype):
    """torch's factory_kwargs: parameters are created in `dtype` (default float)."""
    return dtypes.as_dtype(dtype) if dtype is not None else dtypes.defaults.floating


def add_weight_and_bias(module, weight_shape, bias, dtype):
    """Register an uninitialised `weight` of `weight_shape` and a `bias` of weight_shape[0]
    (None without bias), as Linear, Bilinear and the convolutions do."""
    module.weight = Parameter(empty(weight_shape, dtype=factory(dtype)))
    if bias:
        module.bias = Parameter(empty(weight_shape[0], dtype=factory(dtype)))
    else:
        module.register_parameter("bias", None)


def reset_kaiming_uniform(weight, bias):
    """torch's default init of Linear and the convolutions: kaiming_uniform_(a=sqrt(5)) for the
    weight, uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class Identity(Module):
    """Returns its input; takes (and ignores) any constructor arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x W^T + b with W [out_features, in_features]."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        add_weight_and_bias(self, (out_features, in_features), bias, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        reset_kaiming_uniform(self.weight, self.bias)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Bilinear(Module):
    """y_k = x1^T W_k x2 + b_k."""

    def __init__(self, in1_features, in2_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        add_weight_and_bias(self, (out_features, in1_features, in2_features), bias, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.weight.shape[1])
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        return F.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self):
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
