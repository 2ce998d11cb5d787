"""ember: a PyTorch-style deep-learning framework whose models compile to machine code.

`import ember as torch` gives the eager API (Tensor, autograd, nn, optim, utils.data);
`ember.compile` records what ran into an IR graph and compiles it (see DESIGN.md).
`import ember` loads numpy and the dtypes only. The frontend loads on first use of one of its
names (PEP 562 `__getattr__`), so `import ember.ir` and `import ember.runtime` stand alone;
networkx loads when the first IR graph is built, the compiler and llvmlite at `ember.compile`.
"""
import builtins as _builtins
import importlib as _importlib
import importlib.machinery as _machinery
import sys as _sys

import numpy as _np

__version__ = "0.1.0"

from ember import dtypes as _dtypes
from ember.dtypes import (bool_ as bool, uint8, int8, int16, int32, int64, float16, float32, float64,  # noqa: A001
                          half, float, double, short, int, long, DType as dtype, finfo, iinfo)

# The frontend's public names, by the module that defines them ("public=defined" renames them).
# The first read of any of them imports all these modules together (see _load_frontend).
_FRONTEND_EXPORTS = {
    "ember.ops": "OpError",
    "ember.frontend.tensor": "Tensor Size device=Device",
    "ember.frontend.autograd": "no_grad enable_grad set_grad_enabled is_grad_enabled inference_mode",
    "ember.frontend.creation": """
        tensor as_tensor from_numpy zeros ones empty full zeros_like ones_like empty_like full_like arange linspace
        logspace eye rand randn randint randperm rand_like randn_like randint_like FloatTensor DoubleTensor
        LongTensor IntTensor BoolTensor ByteTensor""",
    "ember.frontend.random": "Generator manual_seed seed initial_seed get_rng_state set_rng_state",
    "ember.frontend.math_ops": """
        add sub subtract mul multiply div divide true_divide floor_divide remainder pow maximum minimum neg negative
        eq ne lt le gt ge greater greater_equal less less_equal not_equal logical_and logical_or logical_xor
        logical_not exp log log1p expm1 log2 log10 exp2 sqrt rsqrt reciprocal sin cos tan tanh sinh cosh sigmoid erf
        abs sign relu floor ceil round trunc frac square where clamp clip clamp_min clamp_max lerp isnan isinf
        isfinite nan_to_num addcmul addcdiv clone fmod atan asin acos atan2 arctan arcsin arccos arctan2 asinh acosh
        atanh arcsinh arccosh arctanh erfinv hypot logaddexp logaddexp2""",
    # median too; the matrix trace is Tensor.trace(), while ember.trace records IR (below)
    "ember.frontend.reductions": """
        sum mean max min amax amin argmax argmin prod var std var_mean std_mean norm logsumexp all any
        count_nonzero cumsum cumprod cummax cummin aminmax dist median""",
    "ember.frontend.shape_ops": """
        reshape permute transpose swapaxes swapdims t movedim flatten unflatten unsqueeze squeeze broadcast_to
        broadcast_tensors cat concat concatenate stack hstack vstack split chunk unbind flip fliplr flipud roll
        narrow gather take_along_dim index_select scatter_add tril triu tile scatter index_add repeat_interleave
        diag select diagonal""",
    "ember.frontend.indexing": "nonzero masked_fill masked_select argwhere",
    "ember.frontend.linalg": """
        matmul mm bmm mv dot inner outer ger addmm baddbmm addbmm einsum cross svd linalg linalg_module=linalg det
        logdet slogdet inverse pinverse matrix_power matrix_exp cholesky cholesky_solve cholesky_inverse qr
        triangular_solve chain_matmul frobenius_norm nuclear_norm lu lu_solve lu_unpack solve lstsq symeig eig
        matrix_rank""",
    "ember.frontend.sampling": "multinomial normal bernoulli poisson",
    "ember.frontend.math_more": """
        deg2rad rad2deg erfc fix float_power fmax fmin copysign heaviside logit sinc xlogy signbit sgn positive
        isneginf isposinf isreal is_complex is_signed rsub scalar_tensor""",
    "ember.frontend.array_more": """
        nansum nanmean logcumsumexp diff trapezoid trapz cumulative_trapezoid kron vdot addr addmv rot90
        tensor_split hsplit vsplit dsplit atleast_3d dstack column_stack row_stack moveaxis ravel take diagflat
        block_diag""",
    "ember.frontend.tensor_methods": """
        abs_ acos_ acosh_ arccos_ arccosh_ arcsin_ arcsinh_ arctan_ arctanh_ asin_ asinh_ atan_ atanh_ ceil_ clamp_
        clamp_max_ clamp_min_ clip_ cos_ cosh_ erf_ exp_ expm1_ floor_ frac_ log10_ log1p_ log2_ log_ nan_to_num_
        neg_ negative_ reciprocal_ relu_ round_ rsqrt_ sigmoid_ sin_ sinh_ sqrt_ square_ tan_ tanh_ trunc_
        deg2rad_ rad2deg_ exp2_ erfc_ fix_ logit_ sinc_ xlogy_ addmv_""",
    # torch.* forms of nn.functional whose torch signatures match F's (torch.dropout, torch.embedding,
    # torch.batch_norm and torch.instance_norm take other arguments: they are left out)
    "ember.frontend.nn.functional": """
        softmax log_softmax conv1d conv2d conv_transpose1d conv_transpose2d avg_pool1d adaptive_avg_pool1d
        max_pool1d max_pool2d pixel_shuffle pixel_unshuffle prelu bilinear layer_norm group_norm rms_norm selu
        celu threshold cosine_similarity pairwise_distance pdist hardshrink channel_shuffle conv3d conv_transpose3d
        max_pool3d max_pool1d_with_indices""",
    "ember.frontend.sorting": "sort argsort topk unique kthvalue msort",
    "ember.frontend.trace_function": "trace",
    "ember.frontend.jit": "compile explain",
    "ember.frontend.dynamic_shapes": "mark_dynamic mark_static",
    "ember.frontend.export_library": "export_library",
    "ember.runtime.exported_library": "load_exported",
    "ember.runtime.thread_runtime": "set_num_threads get_num_threads",
    "ember.functional": "broadcast_shapes meshgrid tensordot atleast_1d atleast_2d",
    "ember.frontend.serialization": "save load",
    "ember.frontend.special_functions": "lgamma digamma polygamma mvlgamma i0 i0_ special",
    "ember.frontend.bitwise": """
        bitwise_and bitwise_or bitwise_xor bitwise_not bitwise_left_shift bitwise_right_shift gcd gcd_ lcm lcm_ frexp
        ldexp ldexp_ nextafter""",
    "ember.frontend.statistics": "cov corrcoef quantile nanquantile nanmedian mode histc histogram bincount",
    "ember.frontend.searching": "searchsorted bucketize isin unique_consecutive",
    "ember.frontend.combinatorics": "cartesian_prod combinations tril_indices triu_indices vander",
    "ember.frontend.distances": "cdist renorm",
    "ember.frontend.windows": "hann_window hamming_window blackman_window bartlett_window kaiser_window",
    "ember.frontend.global_settings": """
        use_deterministic_algorithms are_deterministic_algorithms_enabled is_deterministic_algorithms_warn_only_enabled
        set_deterministic_debug_mode get_deterministic_debug_mode set_float32_matmul_precision
        get_float32_matmul_precision set_printoptions""",
    "ember.frontend.scatter_ops": """
        index_put index_put_ index_copy index_fill index_reduce scatter_reduce select_scatter slice_scatter
        diagonal_scatter masked_scatter put fill fill_ zero_ detach detach_ is_same_size diag_embed""",
    "ember.frontend.copy_variants": """
        alias_copy expand_copy permute_copy select_copy slice_copy split_copy split_with_sizes_copy squeeze_copy
        t_copy transpose_copy unbind_copy unsqueeze_copy view_copy diagonal_copy detach_copy narrow_copy
        unfold_copy split_with_sizes unsafe_split unsafe_chunk unsafe_split_with_sizes""",
}
# Frontend modules ember also names as its own: `ember.nn` is `ember.frontend.nn`, one module
# under two names, and so are their submodules (`import ember.nn.functional as F`).
_FRONTEND_MODULES = ("nn", "optim", "autograd", "utils", "transforms", "testing", "text")
# Submodules that _load_frontend imports, so that `ember.utils.data.DataLoader` works after `import ember`.
_FRONTEND_SUBMODULES = ("nn.functional", "nn.init", "nn.parameter", "nn.modules", "optim.lr_scheduler", "utils.data")
# ember's own subpackages, imported when first read as attributes (`ember.cuda.is_available()`).
_SUBPACKAGES = ("ir", "cuda", "backends", "accelerator", "functional", "config", "dtypes", "ops", "frontend",
                "passes", "compiler", "runtime", "distributed", "export")


def _export_table():
    table = {}  # public name -> (module, name there)
    for module_name, names in _FRONTEND_EXPORTS.items():
        for entry in names.split():
            public, _, defined = entry.partition("=")
            table[public] = (module_name, defined or public)
    return table


_FRONTEND_NAMES = _export_table()


class _FrontendAliases:
    """Makes `import ember.nn...` (and optim, autograd, utils, transforms) find the frontend
    module, `ember.frontend.nn...`, whether or not the frontend has loaded yet."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        if head != "ember" or rest.partition(".")[0] not in _FRONTEND_MODULES:
            return None
        return _machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None  # a placeholder module: exec_module puts the frontend's in its place

    def exec_module(self, module):
        # The import system hands out whatever sys.modules holds for the name once this returns.
        _sys.modules[module.__name__] = _importlib.import_module("ember.frontend." + module.__name__[len("ember."):])


_sys.meta_path.insert(0, _FrontendAliases())  # first, so that ember.nn.X is never loaded a second time as a copy


def _load_frontend():
    """Import the frontend and bind its public names in this module (once)."""
    from ember.frontend.out_arguments import OUT_FUNCTIONS, with_out
    for public, (module_name, defined) in _FRONTEND_NAMES.items():
        value = getattr(_importlib.import_module(module_name), defined)
        globals()[public] = with_out(value, public) if public in OUT_FUNCTIONS else value
    for name in _FRONTEND_MODULES + _FRONTEND_SUBMODULES:
        _importlib.import_module("ember." + name)  # the import binds `ember.nn` (etc.) here


def __getattr__(name):
    if name in _FRONTEND_NAMES or name in _FRONTEND_MODULES:
        _load_frontend()
        return globals()[name]
    if name in _SUBPACKAGES:
        return _importlib.import_module("ember." + name)
    if name == "bfloat16":  # loads ml_dtypes (see ember/dtypes.py)
        globals()[name] = _dtypes.bfloat16
        return globals()[name]
    raise AttributeError(f"module 'ember' has no attribute {name!r}")


__all__ = sorted([*_FRONTEND_NAMES, *_FRONTEND_MODULES, "ir", "cuda", "backends", "accelerator", "functional",
                  "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64",
                  "half", "finfo", "iinfo", "float", "double", "short", "int", "long", "dtype", "is_tensor", "numel",
                  "is_floating_point", "allclose",
                  "isclose", "equal", "set_default_dtype", "get_default_dtype", "set_default_device",
                  "get_default_device", "promote_types", "result_type", "can_cast"])


def __dir__():
    return sorted({*globals(), *__all__, *_SUBPACKAGES})


def is_tensor(obj):
    from ember.frontend.tensor import Tensor
    return isinstance(obj, Tensor)


def numel(input):
    return input.numel()


def is_floating_point(input):
    return input.is_floating_point()


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    return _builtins.bool(_np.allclose(input._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    from ember.frontend.tensor import Tensor
    return Tensor._wrap(_np.isclose(input._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def equal(input, other):
    return tuple(input.shape) == tuple(other.shape) and _builtins.bool((input._data == other._data).all())


def set_default_dtype(d):
    d = _dtypes.as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _dtypes.defaults.floating = d


def get_default_dtype():
    return _dtypes.defaults.floating


def set_default_device(device_name):
    from ember.frontend.tensor import Device
    if device_name is not None and Device(device_name).type not in ("cpu",):
        raise RuntimeError(f"ember's default device is the CPU; cannot default to {device_name} (move tensors and "
                           "modules with .to(device) instead)")


def get_default_device():
    from ember.frontend.tensor import Device
    return Device("cpu")


def promote_types(type1, type2):
    return _dtypes.promote(type1, type2)


def result_type(tensor1, tensor2):
    from ember.frontend.math_ops import _operand_dtypes
    return _dtypes.result_type(*_operand_dtypes((tensor1, tensor2)))


def can_cast(from_, to):
    return _dtypes.promote(from_, to) is to or from_.category <= to.category
