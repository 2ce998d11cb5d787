"""torch functions and Tensor methods written the way a PyTorch user writes them (`import ember as
torch`): the in-place forms (same object, values of the out-of-place float64 numpy reference, version
counter, the leaf error, gradients through a non-leaf), comparisons, dtype casts, shape helpers,
reductions, contractions, random in-place fillers and the RNG state. Values against numpy in float64,
gradients against float64 finite differences (tests/finite_differences.py)."""
import math
import warnings

import numpy as np
import pytest

import ember as torch
from finite_differences import check_vjp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on inf and nan operands

RNG = np.random.default_rng(0)
NAN, INF = math.nan, math.inf
LEAF_ERROR = "a leaf Variable that requires grad is being used in an in-place operation"
_erf = np.vectorize(math.erf, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def erfinv_reference(y):
    """float64 erfinv by Newton's method on math.erf, from an atanh-shaped first guess."""
    x = np.arctanh(y) * 0.9
    for _ in range(40):
        x = x - (_erf(x) - y) / (2 / np.sqrt(np.pi) * np.exp(-x * x))
    return x


def sign_reference(x):
    """PyTorch's sign: numpy's, but 0 at nan."""
    return np.where(np.isnan(x), 0.0, np.sign(x))


def tensor(array, dtype=None):
    return torch.tensor(np.asarray(array), dtype=dtype)


# ----------------------------------------------------------------------------- unary in-place forms

UNARY_INPLACE = [  # (name, torch.name_(x) or None, x.name_(), float64 reference, input range)
    ("abs", lambda x: torch.abs_(x), lambda x: x.abs_(), np.abs, (-3, 3)),
    ("absolute", None, lambda x: x.absolute_(), np.abs, (-3, 3)),
    ("acos", lambda x: torch.acos_(x), lambda x: x.acos_(), np.arccos, (-0.9, 0.9)),
    ("arccos", lambda x: torch.arccos_(x), lambda x: x.arccos_(), np.arccos, (-0.9, 0.9)),
    ("acosh", lambda x: torch.acosh_(x), lambda x: x.acosh_(), np.arccosh, (1.1, 4)),
    ("arccosh", lambda x: torch.arccosh_(x), lambda x: x.arccosh_(), np.arccosh, (1.1, 4)),
    ("arcsin", lambda x: torch.arcsin_(x), lambda x: x.arcsin_(), np.arcsin, (-0.9, 0.9)),
    ("asinh", lambda x: torch.asinh_(x), lambda x: x.asinh_(), np.arcsinh, (-3, 3)),
    ("arcsinh", lambda x: torch.arcsinh_(x), lambda x: x.arcsinh_(), np.arcsinh, (-3, 3)),
    ("atan", lambda x: torch.atan_(x), lambda x: x.atan_(), np.arctan, (-3, 3)),
    ("arctan", lambda x: torch.arctan_(x), lambda x: x.arctan_(), np.arctan, (-3, 3)),
    ("atanh", lambda x: torch.atanh_(x), lambda x: x.atanh_(), np.arctanh, (-0.9, 0.9)),
    ("arctanh", lambda x: torch.arctanh_(x), lambda x: x.arctanh_(), np.arctanh, (-0.9, 0.9)),
    ("ceil", lambda x: torch.ceil_(x), lambda x: x.ceil_(), np.ceil, (-3, 3)),
    ("floor", lambda x: torch.floor_(x), lambda x: x.floor_(), np.floor, (-3, 3)),
    ("trunc", lambda x: torch.trunc_(x), lambda x: x.trunc_(), np.trunc, (-3, 3)),
    ("fix", lambda x: torch.fix_(x), lambda x: x.fix_(), np.trunc, (-3, 3)),
    ("frac", lambda x: torch.frac_(x), lambda x: x.frac_(), lambda x: x - np.trunc(x), (-3, 3)),
    ("round", lambda x: torch.round_(x), lambda x: x.round_(), np.round, (-3, 3)),
    ("cos", lambda x: torch.cos_(x), lambda x: x.cos_(), np.cos, (-3, 3)),
    ("cosh", lambda x: torch.cosh_(x), lambda x: x.cosh_(), np.cosh, (-3, 3)),
    ("sin", lambda x: torch.sin_(x), lambda x: x.sin_(), np.sin, (-3, 3)),
    ("sinh", lambda x: torch.sinh_(x), lambda x: x.sinh_(), np.sinh, (-3, 3)),
    ("tan", lambda x: torch.tan_(x), lambda x: x.tan_(), np.tan, (-1.2, 1.2)),
    ("tanh", lambda x: torch.tanh_(x), lambda x: x.tanh_(), np.tanh, (-3, 3)),
    ("sinc", lambda x: torch.sinc_(x), lambda x: x.sinc_(), np.sinc, (-3, 3)),
    ("deg2rad", lambda x: torch.deg2rad_(x), lambda x: x.deg2rad_(), np.deg2rad, (-400, 400)),
    ("rad2deg", lambda x: torch.rad2deg_(x), lambda x: x.rad2deg_(), np.rad2deg, (-7, 7)),
    ("erf", lambda x: torch.erf_(x), lambda x: x.erf_(), _erf, (-3, 3)),
    ("erfc", lambda x: torch.erfc_(x), lambda x: x.erfc_(), _erfc, (-2, 5)),
    ("erfinv", None, lambda x: x.erfinv_(), erfinv_reference, (-0.9, 0.9)),
    ("exp2", lambda x: torch.exp2_(x), lambda x: x.exp2_(), np.exp2, (-3, 3)),
    ("expm1", lambda x: torch.expm1_(x), lambda x: x.expm1_(), np.expm1, (-3, 3)),
    ("log", lambda x: torch.log_(x), lambda x: x.log_(), np.log, (0.1, 5)),
    ("log10", lambda x: torch.log10_(x), lambda x: x.log10_(), np.log10, (0.1, 5)),
    ("log1p", lambda x: torch.log1p_(x), lambda x: x.log1p_(), np.log1p, (-0.5, 5)),
    ("log2", lambda x: torch.log2_(x), lambda x: x.log2_(), np.log2, (0.1, 5)),
    ("logit", lambda x: torch.logit_(x), lambda x: x.logit_(), lambda p: np.log(p / (1 - p)), (0.05, 0.95)),
    ("neg", lambda x: torch.neg_(x), lambda x: x.neg_(), np.negative, (-3, 3)),
    ("negative", lambda x: torch.negative_(x), lambda x: x.negative_(), np.negative, (-3, 3)),
    ("reciprocal", lambda x: torch.reciprocal_(x), lambda x: x.reciprocal_(), np.reciprocal, (0.2, 3)),
    ("rsqrt", lambda x: torch.rsqrt_(x), lambda x: x.rsqrt_(), lambda x: 1 / np.sqrt(x), (0.2, 4)),
    ("sigmoid", lambda x: torch.sigmoid_(x), lambda x: x.sigmoid_(), lambda x: 1 / (1 + np.exp(-x)), (-4, 4)),
    ("square", lambda x: torch.square_(x), lambda x: x.square_(), np.square, (-3, 3)),
    ("sgn", None, lambda x: x.sgn_(), sign_reference, (-3, 3)),
    ("sign", None, lambda x: x.sign_(), sign_reference, (-3, 3)),
    ("clamp_max", lambda x: torch.clamp_max_(x, 0.5), lambda x: x.clamp_max_(0.5), lambda x: np.minimum(x, 0.5),
     (-3, 3)),
    ("clamp_min", lambda x: torch.clamp_min_(x, -0.5), lambda x: x.clamp_min_(-0.5), lambda x: np.maximum(x, -0.5),
     (-3, 3)),
    ("clip", lambda x: torch.clip_(x, -0.5, 1.0), lambda x: x.clip_(-0.5, 1.0), lambda x: np.clip(x, -0.5, 1.0),
     (-3, 3)),
]
UNARY_IDS = [row[0] for row in UNARY_INPLACE]


def forms(row):
    """The torch.name_(x) and x.name_() forms a row has."""
    return [form for form in row[1:3] if form is not None]


@pytest.mark.parametrize("row", UNARY_INPLACE, ids=UNARY_IDS)
def test_unary_inplace_returns_self_with_the_float64_reference_and_bumps_the_version(row):
    name, _, _, reference, (low, high) = row
    data = RNG.uniform(low, high, (3, 5))
    for form in forms(row):
        x = tensor(data)
        version = x._version
        assert form(x) is x
        assert x.dtype == torch.float64 and x.shape == (3, 5) and x._version == version + 1
        np.testing.assert_allclose(x.numpy(), reference(data), rtol=1e-10, atol=1e-12)
        single = tensor(data, torch.float32)
        assert form(single) is single and single.dtype == torch.float32
        np.testing.assert_allclose(single.numpy(), reference(data.astype(np.float32).astype(np.float64)),
                                   rtol=3e-6, atol=2e-6)


@pytest.mark.parametrize("row", UNARY_INPLACE, ids=UNARY_IDS)
def test_unary_inplace_on_a_leaf_that_requires_grad_raises_and_is_allowed_under_no_grad(row):
    for form in forms(row):
        leaf = torch.tensor([0.3, 0.6], requires_grad=True)
        with pytest.raises(RuntimeError, match=LEAF_ERROR):
            form(leaf)
        with torch.no_grad():
            assert form(leaf) is leaf
        assert leaf.requires_grad and leaf.grad_fn is None


@pytest.mark.parametrize("row", UNARY_INPLACE, ids=UNARY_IDS)
def test_unary_inplace_on_a_non_leaf_has_the_out_of_place_gradient(row):
    name, _, method, _, (low, high) = row
    data = RNG.uniform(low, high, (2, 4))
    if name in ("clamp_max", "clamp_min", "clip"):  # (finite differences need points off the kinks)
        data = np.where(np.abs(np.abs(data - 0.25) - 0.75) < 0.05, 2.0, data)
    check_vjp(lambda x: method(x * 1), [data])
    for form in forms(row):
        x = torch.tensor(data, requires_grad=True)
        y = x * 1
        assert form(y) is y and y.requires_grad and y.grad_fn is not None


SPECIALS = np.array([0.0, -0.0, INF, -INF, NAN, 1.0, -1.0, 0.5, 2.5, -2.5, 1e-8, 1e30])


@pytest.mark.parametrize("row", [r for r in UNARY_INPLACE if r[0] != "erfinv"], ids=lambda r: r[0])
def test_unary_inplace_at_zeros_infinities_nan_and_halves_matches_numpy(row):
    """Poles give inf, points outside the domain nan; round_ rounds half to even."""
    reference = row[3]
    x = tensor(SPECIALS)
    row[2](x)
    np.testing.assert_allclose(x.numpy(), reference(SPECIALS), rtol=1e-12, atol=0)


def test_erfinv_erfc_sinc_logit_round_edges_and_options():
    edges = torch.tensor([-1.0, 1.0, 0.0, 1.5, NAN]).erfinv_()
    np.testing.assert_array_equal(edges.numpy(), [-INF, INF, 0.0, NAN, NAN])
    np.testing.assert_array_equal(torch.tensor([INF, -INF, 0.0, NAN]).erfc_().numpy(), [0.0, 2.0, 1.0, NAN])
    tails = [4.0, 6.0, 9.0, 10.0]  # 1 - erf rounds these to 0 (float32: 4.0 on, float64: 6.0 on)
    np.testing.assert_allclose(torch.tensor(tails).erfc_().numpy(), _erfc(tails).astype(np.float32), rtol=1e-6, atol=0)
    far = [6.0, 10.0, 26.0]
    np.testing.assert_allclose(torch.erfc_(tensor(far)).numpy(), _erfc(far), rtol=1e-15, atol=0)
    assert torch.sinc_(torch.tensor([0.0])).item() == 1.0
    x = torch.tensor([0.0, 0.05, 0.5, 1.0], dtype=torch.float64)
    assert torch.logit_(x, eps=0.1) is x
    np.testing.assert_allclose(x.numpy(), np.log([0.1 / 0.9, 0.1 / 0.9, 1.0, 9.0]), rtol=1e-12)
    halves = torch.tensor([1.25, 2.5, 3.5, -0.5, 0.125, 12345.0], dtype=torch.float64)
    assert halves.round_(decimals=1) is halves
    np.testing.assert_allclose(halves.numpy(), np.round([1.25, 2.5, 3.5, -0.5, 0.125, 12345.0], 1), rtol=1e-15)
    np.testing.assert_array_equal(torch.round_(torch.tensor([0.5, 1.5, 2.5, -2.5])).numpy(), [0.0, 2.0, 2.0, -2.0])
    np.testing.assert_array_equal(torch.tensor([-1.5, 2.25]).frac_().numpy(), [-0.5, 0.25])


@pytest.mark.parametrize("call", [lambda x: x.sin_(), lambda x: torch.reciprocal_(x), lambda x: x.deg2rad_(),
                                  lambda x: x.rsqrt_(), lambda x: torch.sigmoid_(x), lambda x: x.erfinv_()])
def test_float_valued_inplace_on_an_integer_tensor_cannot_cast_back(call):
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        call(torch.tensor([1, 2]))


def test_integer_preserving_inplace_keep_integers():
    ints = [3, -2, 0]
    for call, expected in [(lambda x: x.abs_(), [3, 2, 0]), (lambda x: torch.neg_(x), [-3, 2, 0]),
                           (lambda x: x.square_(), [9, 4, 0]), (lambda x: torch.floor_(x), ints),
                           (lambda x: x.sgn_(), [1, -1, 0]), (lambda x: x.clamp_max_(1), [1, -2, 0]),
                           (lambda x: torch.clamp_min_(x, -1), [3, -1, 0]), (lambda x: x.clip_(min=0), [3, 0, 0])]:
        x = torch.tensor(ints)
        assert call(x) is x and x.dtype == torch.int64 and x.tolist() == expected
    with pytest.raises(RuntimeError, match="At least one of 'min' or 'max' must not be None"):
        torch.tensor([1.0]).clip_()


def test_inplace_on_an_output_saved_for_backward_makes_backward_raise():
    a = torch.tensor([0.5, 1.0], requires_grad=True)
    b = a.sigmoid()  # sigmoid saves its output
    b.tanh_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()
    a = torch.tensor([0.5, 1.0], requires_grad=True)
    b = a * 2
    c = b * b  # saves b
    b.sin_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        c.sum().backward()
    a = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    b = a * 2
    b.exp_().log1p_()  # exp_ saves its output, which log1p_ overwrites
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()
    a = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    b = a * 2
    b.sin_().mul_(3).exp_()  # sin_ keeps its input for backward itself
    b.sum().backward()
    x = np.array([0.5, 1.0])
    np.testing.assert_allclose(a.grad.numpy(), 6 * np.cos(2 * x) * np.exp(3 * np.sin(2 * x)), rtol=1e-12)


def test_nan_to_num_inplace_replaces_nan_and_infinities_with_dtype_limits_or_the_given_values():
    data = [NAN, INF, -INF, 1.5]
    x = torch.tensor(data)
    assert torch.nan_to_num_(x) is x and x._version == 1
    big = np.finfo(np.float32).max
    np.testing.assert_array_equal(x.numpy(), np.array([0.0, big, -big, 1.5], np.float32))
    y = torch.tensor(data, dtype=torch.float64)
    assert y.nan_to_num_(nan=1.0, posinf=2.0, neginf=-3.0) is y
    np.testing.assert_array_equal(y.numpy(), np.nan_to_num(np.array(data), nan=1.0, posinf=2.0, neginf=-3.0))
    with pytest.raises(RuntimeError, match=LEAF_ERROR):
        torch.tensor([1.0], requires_grad=True).nan_to_num_()
    check_vjp(lambda t: (t * 1).nan_to_num_(), [RNG.standard_normal(5)])


# ----------------------------------------------------------------------------- binary in-place Tensor methods

P, Q = RNG.uniform(0.5, 2.0, (3, 4)), RNG.uniform(-2.0, 2.0, (3, 4))
BINARY_INPLACE = [  # (name, call on (x, y), float64 reference, differentiable)
    ("atan2", lambda x, y: x.atan2_(y), np.arctan2, True),
    ("arctan2", lambda x, y: x.arctan2_(y), np.arctan2, True),
    ("copysign", lambda x, y: x.copysign_(y), np.copysign, True),
    ("divide", lambda x, y: x.divide_(y), np.divide, True),
    ("divide floor", lambda x, y: x.divide_(y, rounding_mode="floor"), lambda a, b: np.floor(a / b), False),
    ("divide trunc", lambda x, y: x.divide_(y, rounding_mode="trunc"), lambda a, b: np.trunc(a / b), False),
    ("true_divide", lambda x, y: x.true_divide_(y), np.divide, True),
    ("floor_divide", lambda x, y: x.floor_divide_(y), np.floor_divide, False),
    ("fmod", lambda x, y: x.fmod_(y), np.fmod, True),
    ("remainder", lambda x, y: x.remainder_(y), np.mod, True),
    ("heaviside", lambda x, y: x.heaviside_(y), np.heaviside, False),
    ("hypot", lambda x, y: x.hypot_(y), np.hypot, True),
    ("multiply", lambda x, y: x.multiply_(y), np.multiply, True),
    ("subtract", lambda x, y: x.subtract_(y, alpha=2.5), lambda a, b: a - 2.5 * b, True),
    ("pow", lambda x, y: x.pow_(y), np.power, True),
    ("pow scalar", lambda x, y: x.pow_(3), lambda a, b: a ** 3, True),
    ("xlogy", lambda x, y: x.xlogy_(y.abs()), lambda a, b: a * np.log(np.abs(b)), True),
    ("torch.xlogy", lambda x, y: torch.xlogy_(x, y.abs()), lambda a, b: a * np.log(np.abs(b)), True),
    ("addcdiv", lambda x, y: x.addcdiv_(y, x + 3, value=0.5), lambda a, b: a + 0.5 * b / (a + 3), True),
    ("eq", lambda x, y: x.eq_(y.round()), lambda a, b: (a == np.round(b)) * 1.0, False),
    ("ne", lambda x, y: x.ne_(1.0), lambda a, b: (a != 1.0) * 1.0, False),
    ("not_equal", lambda x, y: x.not_equal_(y), lambda a, b: (a != b) * 1.0, False),
    ("gt", lambda x, y: x.gt_(y), lambda a, b: (a > b) * 1.0, False),
    ("greater", lambda x, y: x.greater_(y), lambda a, b: (a > b) * 1.0, False),
    ("lt", lambda x, y: x.lt_(y), lambda a, b: (a < b) * 1.0, False),
    ("less", lambda x, y: x.less_(1.0), lambda a, b: (a < 1.0) * 1.0, False),
    ("le", lambda x, y: x.le_(y), lambda a, b: (a <= b) * 1.0, False),
    ("less_equal", lambda x, y: x.less_equal_(y), lambda a, b: (a <= b) * 1.0, False),
    ("logical_and", lambda x, y: x.logical_and_(y > 0), lambda a, b: np.logical_and(a, b > 0) * 1.0, False),
    ("logical_or", lambda x, y: x.logical_or_(y > 0), lambda a, b: np.logical_or(a, b > 0) * 1.0, False),
    ("logical_xor", lambda x, y: x.logical_xor_(y > 0), lambda a, b: np.logical_xor(a, b > 0) * 1.0, False),
]


@pytest.mark.parametrize("row", BINARY_INPLACE, ids=[row[0] for row in BINARY_INPLACE])
def test_binary_inplace_method_returns_self_keeps_the_dtype_and_matches_numpy(row):
    name, call, reference, differentiable = row
    y = torch.tensor(Q)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        x = torch.tensor(P, dtype=dtype)
        version = x._version
        assert call(x, y.to(dtype)) is x and x._version == version + 1
        assert x.dtype == dtype and x.shape == (3, 4)
        rounded = np.float64 if dtype == torch.float64 else np.float32
        expected = reference(P.astype(rounded).astype(np.float64), Q.astype(rounded).astype(np.float64))
        np.testing.assert_allclose(x.numpy(), expected, rtol=tolerance, atol=tolerance)
    leaf = torch.tensor(P, requires_grad=True)
    if name.startswith("logical"):  # (PyTorch lets the logical ones, never differentiable, write a leaf)
        assert call(leaf, y) is leaf and leaf._version == 1
        assert leaf.requires_grad and leaf.is_leaf and leaf.grad_fn is None
    else:
        with pytest.raises(RuntimeError, match=LEAF_ERROR):
            call(leaf, y)
    if differentiable:
        check_vjp(lambda a, b: call(a * 1, b), [P, Q], wrt=[0, 1] if name not in ("pow scalar", "ne", "less") else [0])


def test_inplace_comparisons_and_logic_broadcast_the_other_but_not_self():
    x = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    assert x.eq_(torch.tensor([1.0, 2.0])) is x and x.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    ints = torch.tensor([1, 2, 3])
    assert ints.eq_(torch.tensor([1, 0, 3])).dtype == torch.int64 and ints.tolist() == [1, 0, 1]
    x = torch.tensor([1.0, 0.0, -3.0])
    assert x.logical_not_() is x and x.tolist() == [0.0, 1.0, 0.0] and x._version == 1
    assert torch.tensor([True, False]).logical_or_(torch.tensor([False, False])).tolist() == [True, False]
    with pytest.raises(RuntimeError, match=r"output with shape \[2\] doesn't match the broadcast shape \[2, 2\]"):
        torch.tensor([1.0, 2.0]).gt_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_logical_inplace_forms_leave_autograd_alone_as_pytorch():
    """logical_and_/or_/xor_/not_ have no derivative in PyTorch: they write a leaf that requires
    grad (which stays a leaf), and leave a non-leaf's history as it was (its gradient passes
    through unchanged, as PyTorch's does)."""
    leaf = torch.tensor([1.0, 0.0], requires_grad=True)
    assert leaf.logical_not_() is leaf and leaf.tolist() == [0.0, 1.0] and leaf._version == 1
    assert leaf.is_leaf and leaf.requires_grad and leaf.grad_fn is None
    (leaf * 2).sum().backward()
    assert leaf.grad.tolist() == [2.0, 2.0]
    base = torch.tensor([1.0, 0.0], requires_grad=True)
    view = base[:1]
    view.logical_not_()
    assert base.tolist() == [0.0, 0.0] and base._version == 1 and view.grad_fn is not None
    a = torch.tensor([2.0, 0.0], requires_grad=True)
    b = a * 3
    history = b.grad_fn
    assert b.logical_xor_(torch.tensor([1.0, 1.0])) is b and b.tolist() == [0.0, 1.0] and b.grad_fn is history
    b.sum().backward()
    assert a.grad.tolist() == [3.0, 3.0]
    a = torch.tensor([1.0, 0.0], requires_grad=True)
    b = a * 3
    c = b * b  # saves b, which the logical write changes
    b.logical_or_(torch.tensor([0.0, 0.0]))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        c.sum().backward()


def test_integer_division_remainder_and_power_inplace_follow_python_rules():
    assert torch.tensor([7, -7]).floor_divide_(torch.tensor([2, 2])).tolist() == [3, -4]
    assert torch.tensor([7, -7]).remainder_(3).tolist() == [1, 2]
    assert torch.tensor([7, -7]).fmod_(3).tolist() == [1, -1]
    assert torch.tensor([2, 3]).pow_(3).tolist() == [8, 27]
    assert torch.tensor([-1, 0, 2]).heaviside_(torch.tensor([5])).tolist() == [0, 5, 1]
    np.testing.assert_array_equal(torch.tensor([7.0, -7.0]).divide_(2, rounding_mode="floor").numpy(), [3.0, -4.0])
    np.testing.assert_array_equal(torch.tensor([0.0, 2.0, 0.0]).xlogy_(torch.tensor([0.0, 1.0, NAN])).numpy(),
                                  [0.0, 0.0, NAN])
    for call in (lambda x: x.divide_(2), lambda x: x.true_divide_(2), lambda x: x.pow_(0.5)):
        with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
            call(torch.tensor([7, -7]))
    with pytest.raises(RuntimeError, match="Integers to negative integer powers are not allowed"):
        torch.tensor([2, 3]).pow_(-1)


# ----------------------------------------------------------------------------- structured in-place Tensor methods

def test_cumsum_cumprod_and_triu_inplace():
    data = RNG.uniform(0.5, 1.5, (3, 4))
    cases = [  # (call, float64 reference, check the gradient through a non-leaf)
        (lambda x: x.cumsum_(0), np.cumsum(data, 0), True), (lambda x: x.cumsum_(dim=-1), np.cumsum(data, 1), True),
        (lambda x: x.cumprod_(1), np.cumprod(data, 1), True),
        (lambda x: x.cumprod_(dim=0), np.cumprod(data, 0), True),
        (lambda x: x.triu_(), np.triu(data), True), (lambda x: x.triu_(1), np.triu(data, 1), True),
        (lambda x: x.triu_(diagonal=-1), np.triu(data, -1), True)]
    for call, reference, gradient in cases:
        x = tensor(data)
        assert call(x) is x and x._version == 1
        np.testing.assert_allclose(x.numpy(), reference, rtol=1e-12)
        with pytest.raises(RuntimeError, match=LEAF_ERROR):
            call(torch.tensor(data, requires_grad=True))
        if gradient:
            check_vjp(lambda t: call(t * 1), [data])
    assert torch.tensor([[1, 2], [3, 4]]).cumsum_(dim=1).tolist() == [[1, 3], [3, 7]]
    assert torch.tensor([1, 2, 3]).cumprod_(0).tolist() == [1, 2, 6]
    np.testing.assert_array_equal(torch.ones(2, 3, 3).triu_(diagonal=-1).numpy(), np.triu(np.ones((2, 3, 3)), -1))


def test_cumprod_inplace_backward_and_what_cumprod_saves():
    """PyTorch's CumprodBackward saves the input and the result: cumprod_ itself is fine, a later
    write to either fails backward (the result written in place is watched where it was written)."""
    for data, write, grad in [([1.0, 3.0], lambda b: b.cumprod_(0), [4.0, 1.0]),
                              ([[1.0, 3.0], [2.0, 0.5]], lambda b: b[0].cumprod_(0), [[4.0, 1.0], [1.0, 1.0]])]:
        a = torch.tensor(data, requires_grad=True)
        b = a * 1
        write(b)
        b.sum().backward()
        assert a.grad.tolist() == grad
    for first, write in [(lambda a: a * 1, lambda b: b.cumprod(0).mul_(2)),  # the result overwritten
                         (lambda a: a * 1, lambda b: (b.cumprod(0), b.mul_(2))[0]),  # the input overwritten
                         (lambda a: a * 1, lambda b: b.cumprod_(0).add_(1)),  # cumprod_'s result overwritten
                         (lambda a: a.exp(), lambda b: b.cumprod_(0))]:  # exp's saved result overwritten
        out = write(first(torch.tensor([1.0, 3.0], requires_grad=True)))
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()
    w = torch.nn.Parameter(torch.tensor([1.0, 3.0, 2.0]))

    def step():  # compiled: the backward runs through cumprod_ on a non-leaf
        w.grad = None
        b = w * 1
        b.cumprod_(0)
        (b * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
        return w.grad.clone()
    compiled = torch.compile(step)
    for _ in range(2):
        np.testing.assert_allclose(compiled().numpy(), [25.0, 8.0, 9.0])


@pytest.mark.parametrize("method", ["cumsum_", "cumprod_"])
def test_cumulative_inplace_with_another_dtype_is_a_bad_inplace_call(method):
    for start, dtype, names in [(torch.float32, torch.float64, ("float", "double")),
                                (torch.int64, torch.float32, ("long int", "float")),
                                (torch.float64, torch.float32, ("double", "float"))]:
        with pytest.raises(RuntimeError, match=f"Bad in-place call: input tensor dtype {names[0]} and output tensor "
                                               f"dtype {names[1]} should match"):
            getattr(torch.ones(3, dtype=start), method)(0, dtype=dtype)
    x = torch.ones(3)
    assert getattr(x, method)(0, dtype=torch.float32) is x and x.dtype == torch.float32
    with pytest.raises(RuntimeError, match=LEAF_ERROR):  # (the leaf check comes first, as in PyTorch)
        getattr(torch.ones(3, requires_grad=True), method)(0, dtype=torch.float64)
    assert torch.ones(3).cumsum(0, dtype=torch.float64).dtype == torch.float64


def test_batched_matrix_inplace_products_with_beta_and_alpha():
    m, v, w = RNG.standard_normal((3, 4)), RNG.standard_normal(4), RNG.standard_normal(3)
    b1, b2 = RNG.standard_normal((5, 3, 2)), RNG.standard_normal((5, 2, 4))
    base, batch = RNG.standard_normal((3, 4)), RNG.standard_normal((5, 3, 4))
    cases = [  # (call on tensors, arrays, float64 reference)
        (lambda y, a, b: y.addmv_(a, b, beta=0.5, alpha=2.0), (w, m, v), 0.5 * w + 2.0 * m @ v),
        (lambda y, a, b: torch.addmv_(y, a, b), (w, m, v), w + m @ v),
        (lambda y, a, b: y.addr_(a, b, beta=0.5, alpha=2.0), (base, w, v), 0.5 * base + 2.0 * np.outer(w, v)),
        (lambda y, a, b: y.addbmm_(a, b, beta=0.5, alpha=-1.5), (base, b1, b2), 0.5 * base - 1.5 * (b1 @ b2).sum(0)),
        (lambda y, a, b: y.baddbmm_(a, b, alpha=2.0), (batch, b1, b2), batch + 2.0 * b1 @ b2),
    ]
    for call, arrays, expected in cases:
        y = tensor(arrays[0])
        assert call(y, tensor(arrays[1]), tensor(arrays[2])) is y and y._version == 1
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
        with pytest.raises(RuntimeError, match=LEAF_ERROR):
            call(torch.tensor(arrays[0], requires_grad=True), tensor(arrays[1]), tensor(arrays[2]))
        check_vjp(lambda y, a, b: call(y * 1, a, b), list(arrays))
    y = torch.tensor([NAN, 1.0])  # beta=0 ignores what was there, nan included
    assert y.addmv_(torch.ones(2, 3), torch.ones(3), beta=0).tolist() == [3.0, 3.0]


# ----------------------------------------------------------------------------- random in-place fillers and RNG state

def test_random_bernoulli_and_exponential_fill_in_place_with_the_right_distribution():
    x = torch.zeros(20_000)
    assert x.random_(3, 7) is x and x.dtype == torch.float32 and sorted(x.unique().tolist()) == [3.0, 4.0, 5.0, 6.0]
    assert sorted(torch.zeros(2000).random_(4).unique().tolist()) == [0.0, 1.0, 2.0, 3.0]
    assert sorted(torch.zeros(2000, dtype=torch.int64).random_(-2, 2).unique().tolist()) == [-2, -1, 0, 1]
    assert torch.zeros(2000, dtype=torch.uint8).random_().max().item() > 200
    counts = np.bincount(x.numpy().astype(np.int64) - 3, minlength=4)
    assert np.all(np.abs(counts / 20_000 - 0.25) < 0.02)
    b = torch.zeros(20_000, dtype=torch.float64)
    assert b.bernoulli_(0.3) is b and sorted(b.unique().tolist()) == [0.0, 1.0] and abs(b.mean().item() - 0.3) < 0.02
    assert sorted(torch.zeros(1000).bernoulli_().unique().tolist()) == [0.0, 1.0]
    e = torch.zeros(50_000)
    assert e.exponential_(2.0) is e and e.min().item() >= 0 and abs(e.mean().item() - 0.5) < 0.02
    assert abs(e.std().item() - 0.5) < 0.02
    assert abs(torch.zeros(50_000).exponential_(lambd=4.0).mean().item() - 0.25) < 0.01
    torch.manual_seed(3)
    first = torch.zeros(6).random_(0, 100)
    torch.manual_seed(3)
    assert torch.equal(first, torch.zeros(6).random_(0, 100))
    for call in (lambda t: t.random_(0, 3), lambda t: t.bernoulli_(0.5), lambda t: t.exponential_()):
        x = torch.zeros(3)
        assert call(x) is x and x._version == 1
        with pytest.raises(RuntimeError, match=LEAF_ERROR):
            call(torch.tensor([0.5], requires_grad=True))


def test_rng_state_round_trips_and_initial_seed_reports_the_manual_seed():
    torch.manual_seed(1234)
    assert torch.initial_seed() == 1234
    state = torch.get_rng_state()
    assert state.dtype == torch.uint8 and state.dim() == 1
    first = torch.rand(5)
    torch.set_rng_state(state)
    assert torch.equal(torch.rand(5), first)
    torch.randn(3)
    assert torch.equal(state, torch.get_rng_state()) is False
    torch.set_rng_state(state)
    assert torch.equal(torch.rand(5), first) and torch.initial_seed() == 1234


def test_default_device_is_the_cpu():
    assert torch.get_default_device() == torch.device("cpu") and torch.get_default_device().type == "cpu"
    assert torch.zeros(2).is_cuda is False


# ----------------------------------------------------------------------------- casts and shape queries

def test_byte_char_short_truncate_toward_zero_and_wrap_integers():
    x = torch.tensor([2.7, -2.7, 100.2])
    assert x.byte().dtype == torch.uint8 and torch.tensor([2.7, 255.9, 0.2]).byte().tolist() == [2, 255, 0]
    assert x.char().dtype == torch.int8 and x.char().tolist() == [2, -2, 100]
    assert x.short().dtype == torch.int16 and torch.tensor([2.7, -2.7, 3e4]).short().tolist() == [2, -2, 30000]
    ints = np.array([70000, -200, 257, -1])
    assert torch.tensor(ints).short().tolist() == ints.astype(np.int16).tolist()
    assert torch.tensor(ints).char().tolist() == ints.astype(np.int8).tolist()
    assert torch.tensor(ints).byte().tolist() == ints.astype(np.uint8).tolist()
    assert torch.tensor([True, False]).byte().tolist() == [1, 0]
    assert not x.short().requires_grad and x.byte() is not x


def test_ndimension_nelement_and_reshape_as():
    assert torch.zeros(2, 3, 4).ndimension() == 3 and torch.tensor(1.0).ndimension() == 0
    assert torch.zeros(2, 3).nelement() == 6 and torch.tensor(1.0).nelement() == 1 and torch.zeros(0, 3).nelement() == 0
    data = RNG.standard_normal(6)
    y = tensor(data).reshape_as(torch.zeros(3, 2))
    assert y.shape == (3, 2) and np.array_equal(y.numpy(), data.reshape(3, 2))
    check_vjp(lambda t: t.reshape_as(torch.zeros(2, 3)), [data])


# ----------------------------------------------------------------------------- comparisons

COMPARISONS = [("eq", lambda a, b: torch.eq(a, b), lambda a, b: a.eq(b), np.equal),
               ("ne", lambda a, b: torch.ne(a, b), lambda a, b: a.ne(b), np.not_equal),
               ("lt", lambda a, b: torch.lt(a, b), lambda a, b: a.lt(b), np.less),
               ("le", lambda a, b: torch.le(a, b), lambda a, b: a.le(b), np.less_equal),
               ("gt", lambda a, b: torch.gt(a, b), lambda a, b: a.gt(b), np.greater),
               ("ge", lambda a, b: torch.ge(a, b), lambda a, b: a.ge(b), np.greater_equal)]


@pytest.mark.parametrize("name,function,method,reference", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_comparisons_give_bool_broadcast_scalars_and_treat_nan_as_unordered(name, function, method, reference):
    a = np.array([[1.0, NAN, 2.0, -0.0], [3.0, 1.0, INF, 5.0]])
    b = np.array([1.0, NAN, 3.0, 0.0])
    for call in (function, method):
        out = call(tensor(a), tensor(b))
        assert out.dtype == torch.bool and out.shape == (2, 4)
        np.testing.assert_array_equal(out.numpy(), reference(a, b))
        np.testing.assert_array_equal(call(tensor(a), 2.0).numpy(), reference(a, 2.0))
    ints = np.array([1, 2, 3])
    np.testing.assert_array_equal(method(tensor(ints), 2.5).numpy(), reference(ints, 2.5))
    flipped = ints[::-1].copy()
    np.testing.assert_array_equal(function(tensor(ints), tensor(flipped)).numpy(), reference(ints, flipped))
    assert not method(torch.tensor([1.0], requires_grad=True), 1.0).requires_grad


# ----------------------------------------------------------------------------- out-of-place functions and methods

def test_clamp_max_fix_sgn_absolute_out_of_place():
    data = RNG.uniform(-3, 3, (3, 4))
    bound = RNG.uniform(-1, 1, (3, 4))
    np.testing.assert_allclose(torch.clamp_max(tensor(data), 0.5).numpy(), np.minimum(data, 0.5))
    np.testing.assert_allclose(tensor(data).clamp_max(tensor(bound)).numpy(), np.minimum(data, bound))
    np.testing.assert_array_equal(torch.clamp_max(torch.tensor([1.0, 2.0, NAN]), 1.5).numpy(), [1.0, 1.5, NAN])
    assert torch.clamp_max(torch.tensor([1, 2, 3]), 2).tolist() == [1, 2, 2]
    check_vjp(lambda x, m: torch.clamp_max(x, m), [data, bound])
    check_vjp(lambda x: x.clamp_max(0.5), [np.where(np.abs(data - 0.5) < 0.05, 0.0, data)])
    np.testing.assert_array_equal(torch.fix(tensor(data)).numpy(), np.trunc(data))
    np.testing.assert_array_equal(tensor(data).fix().numpy(), np.trunc(data))
    specials = np.array([-1.5, 0.0, -0.0, 2.0, NAN, -INF])
    np.testing.assert_array_equal(torch.sgn(tensor(specials)).numpy(), [-1.0, 0.0, 0.0, 1.0, 0.0, -1.0])
    np.testing.assert_array_equal(tensor(specials).sgn().numpy(), [-1.0, 0.0, 0.0, 1.0, 0.0, -1.0])
    np.testing.assert_array_equal(tensor(data).absolute().numpy(), np.abs(data))
    assert torch.tensor([-2, 3]).absolute().tolist() == [2, 3]
    check_vjp(lambda x: x.absolute() + x.sgn() + torch.fix(x), [data])


def test_fliplr_flipud_and_swapdims():
    data = RNG.standard_normal((2, 3, 4))
    for call, expected in [(lambda x: torch.fliplr(x), np.fliplr(data)), (lambda x: x.fliplr(), np.fliplr(data)),
                           (lambda x: torch.flipud(x), np.flipud(data)), (lambda x: x.flipud(), np.flipud(data)),
                           (lambda x: torch.swapdims(x, 0, -1), np.swapaxes(data, 0, -1)),
                           (lambda x: x.swapdims(1, 2), np.swapaxes(data, 1, 2))]:
        np.testing.assert_array_equal(call(tensor(data)).numpy(), expected)
        check_vjp(call, [data])
    np.testing.assert_array_equal(torch.flipud(torch.tensor([1.0, 2.0])).numpy(), [2.0, 1.0])
    for call, smallest in [(lambda x: torch.fliplr(x), 2), (lambda x: x.fliplr(), 2), (lambda x: torch.flipud(x), 1),
                           (lambda x: x.flipud(), 1)]:
        for dims in range(smallest):
            with pytest.raises(RuntimeError, match=f"Input must be >= {smallest}-d."):
                call(torch.zeros((2,) * dims))
    base = torch.zeros(2, 3)
    swapped = base.swapdims(0, 1)
    swapped[2, 1] = 5.0  # a view, as PyTorch's
    assert base[1, 2].item() == 5.0 and swapped.shape == (3, 2)


def cummin_reference(data, axis):
    """Running minimum; the index moves to each new element that is <= the minimum so far, and
    to each nan (which then stays the minimum)."""
    data = np.moveaxis(data, axis, -1)
    values, indices = np.empty_like(data), np.zeros(data.shape, np.int64)
    for position in np.ndindex(data.shape[:-1]):
        best, where = INF, 0
        for i, v in enumerate(data[position]):
            if np.isnan(v) or (not np.isnan(best) and v <= best):
                best, where = v, i
            values[position + (i,)], indices[position + (i,)] = best, where
    return np.moveaxis(values, -1, axis), np.moveaxis(indices, -1, axis)


def test_cummin_values_indices_ties_and_nan():
    data = np.array([[3.0, 1.0, 1.0, 0.0, 2.0, 0.0], [2.0, NAN, 1.0, NAN, -1.0, -5.0]])
    for dim in (0, 1, -1):
        values, indices = torch.cummin(tensor(data), dim)
        expected_values, expected_indices = cummin_reference(data, dim)
        np.testing.assert_array_equal(values.numpy(), expected_values)
        np.testing.assert_array_equal(indices.numpy(), expected_indices)
        assert indices.dtype == torch.int64
    result = tensor(data).cummin(dim=1)
    np.testing.assert_array_equal(result.indices.numpy(), cummin_reference(data, 1)[1])
    assert torch.cummin(torch.tensor([3, 1, 2]), -1).values.tolist() == [3, 1, 1]
    smooth = RNG.standard_normal((3, 5))
    check_vjp(lambda x: torch.cummin(x, 1).values, [smooth])
    check_vjp(lambda x: x.cummin(0)[0], [smooth])


def test_msort_sorts_along_the_first_dimension():
    data = RNG.standard_normal((5, 3))
    np.testing.assert_array_equal(torch.msort(tensor(data)).numpy(), np.sort(data, axis=0))
    np.testing.assert_array_equal(torch.tensor([3.0, NAN, 1.0]).msort().numpy(), [1.0, 3.0, NAN])
    check_vjp(lambda x: x.msort(), [data])


def test_ger_inner_and_tensordot_contractions():
    u, v = RNG.standard_normal(3), RNG.standard_normal(4)
    np.testing.assert_allclose(torch.ger(tensor(u), tensor(v)).numpy(), np.outer(u, v), rtol=1e-12)
    np.testing.assert_allclose(tensor(u).ger(tensor(v)).numpy(), np.outer(u, v), rtol=1e-12)
    check_vjp(lambda a, b: a.ger(b), [u, v])
    w = RNG.standard_normal(3)
    np.testing.assert_allclose(torch.inner(tensor(u), tensor(w)).item(), np.inner(u, w), rtol=1e-12)
    np.testing.assert_allclose(tensor(u).inner(tensor(w)).item(), np.inner(u, w), rtol=1e-12)
    check_vjp(lambda a, b: torch.inner(a, b), [u, w])
    a, b = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((3, 4, 5))
    c = RNG.standard_normal((4, 3, 5))
    for call, arrays, expected in [
        (lambda x, y: torch.tensordot(x, y), (a, b), np.tensordot(a, b)),
        (lambda x, y: torch.tensordot(x, y, dims=1), (a, c), np.tensordot(a, c, 1)),
        (lambda x, y: torch.tensordot(x, y, dims=([1, 2], [1, 0])), (a, c), np.tensordot(a, c, ([1, 2], [1, 0]))),
        (lambda x, y: torch.tensordot(x, y, dims=0), (u, v), np.tensordot(u, v, 0)),
    ]:
        np.testing.assert_allclose(call(tensor(arrays[0]), tensor(arrays[1])).numpy(), expected, rtol=1e-12, atol=1e-12)
        check_vjp(call, list(arrays))
    ints = torch.tensordot(torch.ones(2, 3, dtype=torch.int64), torch.ones(3, 4, dtype=torch.int64), dims=1)
    assert ints.dtype == torch.int64 and ints.tolist() == [[3] * 4] * 2


def test_atleast_1d_2d_and_concat():
    scalar = torch.tensor(2.0)
    assert torch.atleast_1d(scalar).shape == (1,) and torch.atleast_2d(scalar).shape == (1, 1)
    assert torch.atleast_2d(torch.zeros(3)).shape == (1, 3)
    assert torch.atleast_2d(torch.zeros(2, 3, 4)).shape == (2, 3, 4)
    one, matrix = torch.atleast_1d(scalar, torch.zeros(2, 2))
    assert one.tolist() == [2.0] and matrix.shape == (2, 2)
    assert [t.shape for t in torch.atleast_2d(scalar, torch.zeros(3))] == [(1, 1), (1, 3)]
    for function, shapes in [(torch.atleast_1d, [(1,), (2,)]), (torch.atleast_2d, [(1, 1), (1, 2)]),
                             (torch.atleast_3d, [(1, 1, 1), (1, 2, 1)])]:
        for pair in ([scalar, torch.ones(2)], (scalar, torch.ones(2))):  # a list or tuple gives a tuple
            out = function(pair)
            assert isinstance(out, tuple) and [t.shape for t in out] == shapes
        single = function([scalar])
        assert isinstance(single, tuple) and len(single) == 1 and single[0].shape == shapes[0]
        assert function(()) == () and function(scalar).shape == shapes[0]
        with pytest.raises(TypeError, match="expected Tensor as element 1 in argument 0, but got int"):
            function([scalar, 2])
    check_vjp(lambda x: torch.atleast_2d(x) * 2, [np.array(1.5)])
    check_vjp(lambda x: torch.atleast_1d(x) * 2, [np.array(1.5)])
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 2))
    np.testing.assert_array_equal(torch.concat([tensor(a), tensor(b)], dim=1).numpy(), np.concatenate([a, b], 1))
    np.testing.assert_array_equal(torch.concat((tensor(a.T), tensor(b))).numpy(), np.concatenate([a.T, b], 0))
    assert torch.concat((torch.zeros(2, 1, dtype=torch.int64), torch.ones(2, 2)), -1).dtype == torch.float32
    check_vjp(lambda x, y: torch.concat([x, y], -1), [a, b])


def test_std_mean_returns_std_then_mean_with_dims_correction_and_keepdim():
    data = RNG.standard_normal((3, 4, 5))
    for kwargs, axis, ddof, keepdims in [({}, None, 1, False), ({"dim": 1, "keepdim": True}, 1, 1, True),
                                         ({"dim": (0, 2), "correction": 0}, (0, 2), 0, False),
                                         ({"dim": -1, "unbiased": False}, -1, 0, False)]:
        std, mean = torch.std_mean(tensor(data), **kwargs)
        np.testing.assert_allclose(std.numpy(), np.std(data, axis=axis, ddof=ddof, keepdims=keepdims), rtol=1e-12)
        np.testing.assert_allclose(mean.numpy(), np.mean(data, axis=axis, keepdims=keepdims), rtol=1e-12, atol=1e-15)
    std, mean = torch.std_mean(tensor(data), 0, False)  # positional unbiased
    np.testing.assert_allclose(std.numpy(), np.std(data, axis=0), rtol=1e-12)
    check_vjp(lambda x: torch.std_mean(x, dim=1)[0], [data])
    check_vjp(lambda x: torch.std_mean(x, dim=1)[1], [data])


DEGREES_OF_FREEDOM = ("degrees of freedom is <= 0. Correction should be strictly less than the reduction factor "
                      r"\(input numel divided by output numel\)")


@pytest.mark.parametrize("name,call,expected", [
    ("std_mean", lambda x: torch.std_mean(x)[0], NAN), ("var_mean", lambda x: torch.var_mean(x)[0], NAN),
    ("std", lambda x: torch.std(x), NAN), ("var", lambda x: x.var(), NAN),
    ("var", lambda x: torch.var(torch.cat([x, x + 1]), correction=3), INF),
    ("std", lambda x: torch.std(x.reshape(1, 1), dim=1, keepdim=True), NAN),
    ("var", lambda x: torch.var(x[:0]), NAN)])
def test_no_degrees_of_freedom_left_warns_and_gives_nan_or_inf(name, call, expected):
    x = torch.tensor([1.5])
    with pytest.warns(UserWarning, match=rf"^{name}\(\): {DEGREES_OF_FREEDOM}"):
        out = call(x)
    np.testing.assert_array_equal(out.numpy().reshape(-1), [expected])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one degree of freedom left: no warning
        assert torch.std_mean(x, unbiased=False)[0].item() == 0.0 and torch.var(torch.tensor([1.0, 2.0])).item() == 0.5
    with pytest.raises(RuntimeError):
        torch.std_mean(torch.tensor([1, 2]))
