"""Random sampling (frontend/sampling.py): torch.normal in its four forms, bernoulli, poisson and the
in-place fills bernoulli_/random_/exponential_/cauchy_/log_normal_/geometric_. ember's generator is
not torch's, so draws are checked statistically (means and variances within 5 sigma of the exact
values over ~1e5 seeded draws, supports, reproducibility), with torch's dtypes, shapes, messages
and gradients (torch does not differentiate through a draw: zero gradients), eager and compiled."""
import math
import re
import warnings

import numpy as np
import pytest

import ember

N = 100_000
LEAF_ERROR = "a leaf Variable that requires grad is being used in an in-place operation"


def seeded(seed=0):
    return ember.Generator().manual_seed(seed)


def assert_moments(samples, mean, variance, fourth_central=None):
    """The sample mean and variance within 5 standard errors of the exact ones (the variance's error
    from the fourth central moment; a normal's, 3 sigma^4, unless given)."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    n = samples.size
    assert abs(samples.mean() - mean) < 5 * math.sqrt(variance / n), (samples.mean(), mean)
    fourth = 3 * variance ** 2 if fourth_central is None else fourth_central
    assert abs(samples.var(ddof=1) - variance) < 5 * math.sqrt((fourth - variance ** 2) / n), \
        (samples.var(ddof=1), variance)


def assert_fraction(hits, probability):
    hits = np.asarray(hits, dtype=np.float64).reshape(-1)
    assert abs(hits.mean() - probability) < 5 * math.sqrt(probability * (1 - probability) / hits.size), \
        (hits.mean(), probability)


# ----------------------------------------------------------------------------- torch.normal

def test_normal_tensor_mean_and_std_broadcast_and_pair_each_element_with_its_parameters():
    mean = ember.full((N // 4, 1), 1.5, dtype=ember.float64)
    std = ember.tensor([0.5, 1.0, 2.0, 0.0], dtype=ember.float64)
    draws = ember.normal(mean, std, generator=seeded(1))
    assert draws.shape == (N // 4, 4) and draws.dtype == ember.float64
    for column, sigma in enumerate([0.5, 1.0, 2.0]):
        assert_moments(draws[:, column].numpy(), 1.5, sigma ** 2)
    assert (draws[:, 3].numpy() == 1.5).all()  # std 0: exactly the mean
    three = ember.normal(ember.zeros(2, 1, 3), ember.ones(4, 1))
    assert three.shape == (2, 4, 3) and three.dtype == ember.float32
    assert ember.normal(ember.tensor(0.0), ember.ones(3)).shape == (3,)
    with pytest.raises(RuntimeError, match=re.escape(
            "The size of tensor a (3) must match the size of tensor b (6) at non-singleton dimension 1")):
        ember.normal(ember.zeros(2, 3), ember.ones(6))


def test_normal_number_forms_dtypes_and_sizes():
    g = seeded(2)
    draws = ember.normal(ember.full((N,), -3.0), 2.0, generator=g)  # Tensor mean, float std
    assert draws.dtype == ember.float32 and draws.shape == (N,)
    assert_moments(draws.numpy(), -3.0, 4.0)
    draws = ember.normal(0.5, ember.full((N,), 3.0, dtype=ember.float64), generator=g)  # float mean, Tensor std
    assert draws.dtype == ember.float64
    assert_moments(draws.numpy(), 0.5, 9.0)
    assert ember.normal(mean=ember.zeros(2, 3)).shape == (2, 3)  # std defaults to 1
    draws = ember.normal(2, 3, size=(N,), generator=g)  # numbers, with a size
    assert draws.dtype == ember.float32 and draws.is_leaf and not draws.requires_grad
    assert_moments(draws.numpy(), 2.0, 9.0)
    assert ember.normal(2.0, 3.0, [1, 4]).shape == (1, 4)
    assert ember.normal(0.0, 1.0, (2,), dtype=ember.float64).dtype == ember.float64
    leaf = ember.normal(0.0, 1.0, (2,), requires_grad=True)
    assert leaf.requires_grad and leaf.is_leaf
    assert (ember.normal(1.0, 0.0, (3,)).numpy() == 1.0).all()
    # dtypes as torch: the mean's (when a tensor), else the std's; int std is cast
    assert ember.normal(ember.zeros(2, dtype=ember.float64), ember.ones(2)).dtype == ember.float64
    assert ember.normal(ember.zeros(2), ember.ones(2, dtype=ember.float64)).dtype == ember.float32
    assert ember.normal(ember.zeros(2), ember.ones(2, dtype=ember.int64)).dtype == ember.float32
    assert ember.normal(ember.zeros(2, dtype=ember.float16), 1.0).dtype == ember.float16


def test_normal_out_writes_in_outs_dtype_and_shape_as_torch():
    out = ember.empty(2, dtype=ember.float64)
    assert ember.normal(0.0, 1.0, (2,), out=out) is out and out.dtype == ember.float64
    out = ember.empty(2)
    assert ember.normal(ember.zeros(2, dtype=ember.float64), ember.ones(2, dtype=ember.float64), out=out) is out
    assert out.dtype == ember.float32
    assert ember.normal(ember.zeros(2), 1.0, out=ember.empty(2, 2)).shape == (2, 2)  # torch broadcasts mean and out
    with pytest.raises(RuntimeError, match=re.escape("dtype Double does not match dtype of out parameter (Float)")):
        ember.normal(0.0, 1.0, (2,), dtype=ember.float64, out=ember.empty(2))
    with pytest.raises(RuntimeError, match="functions with out=... arguments don't support automatic differentiation"):
        ember.normal(ember.zeros(2, requires_grad=True), ember.ones(2), out=ember.empty(2))
    with pytest.raises(NotImplementedError, match=re.escape("\"normal_kernel_cpu\" not implemented for 'Long'")):
        ember.normal(ember.zeros(2), out=ember.empty(2, dtype=ember.int64))


def test_normal_refuses_what_torch_refuses():
    with pytest.raises(RuntimeError, match=re.escape("normal expects std >= 0.0, but found std -1")):
        ember.normal(ember.zeros(2), -1.0)
    with pytest.raises(RuntimeError, match=re.escape("normal expects std >= 0.0, but found std nan")):
        ember.normal(0.0, math.nan, (2,))
    with pytest.raises(RuntimeError, match=re.escape("normal expects all elements of std >= 0.0")):
        ember.normal(0.0, -ember.ones(2))
    for mean, std in ((ember.zeros(2, dtype=ember.int64), 1.0), (0.0, ember.ones(2, dtype=ember.int64))):
        with pytest.raises(NotImplementedError, match=re.escape("\"normal_kernel_cpu\" not implemented for 'Long'")):
            ember.normal(mean, std)
    for call in (lambda: ember.normal(2.0, 3.0), lambda: ember.normal(0.0, 1.0, 3),
                 lambda: ember.normal(ember.zeros(2), ember.ones(2), dtype=ember.float64),
                 lambda: ember.normal([0.0, 1.0], 1.0), lambda: ember.normal(ember.zeros(2), 1.0, (3,))):
        with pytest.raises(TypeError, match=re.escape("normal() received an invalid combination of arguments")):
            call()
    with pytest.raises(RuntimeError, match=re.escape("Trying to create tensor with negative dimension -1: [-1]")):
        ember.normal(0.0, 1.0, (-1,))


def test_normal_gives_mean_and_std_zero_gradients_as_torch():
    """torch.normal does not reparameterize: the result requires grad, and both gradients are 0."""
    mean = ember.zeros(3, 1, dtype=ember.float64, requires_grad=True)
    std = ember.full((1, 4), 2.0, dtype=ember.float64, requires_grad=True)
    result = ember.normal(mean, std)
    assert result.requires_grad and result.grad_fn is not None and result.shape == (3, 4)
    (result * ember.arange(12.0, dtype=ember.float64).reshape(3, 4)).sum().backward()
    assert mean.grad.shape == (3, 1) and std.grad.shape == (1, 4)
    for grad in (mean.grad, std.grad):
        assert (grad.numpy() == 0).all() and not np.signbit(grad.numpy()).any()
    only_mean = ember.zeros(3, requires_grad=True)
    ember.normal(only_mean, 1.0).sum().backward()
    only_std = ember.ones(3, requires_grad=True)
    ember.normal(1.0, only_std).sum().backward()
    assert only_mean.grad.tolist() == [0.0] * 3 and only_std.grad.tolist() == [0.0] * 3
    with ember.no_grad():
        assert not ember.normal(only_mean, only_std).requires_grad


# ----------------------------------------------------------------------------- bernoulli

def test_bernoulli_draws_zeros_and_ones_with_each_elements_probability():
    p = ember.tensor([0.1, 0.5, 0.9, 0.0, 1.0], dtype=ember.float64).repeat(N // 5, 1)
    draws = ember.bernoulli(p, generator=seeded(3))
    assert draws.dtype == ember.float64 and draws.shape == p.shape
    values = draws.numpy()
    assert set(np.unique(values)) <= {0.0, 1.0}
    for column, probability in enumerate([0.1, 0.5, 0.9]):
        assert_fraction(values[:, column], probability)
    assert (values[:, 3] == 0).all() and (values[:, 4] == 1).all()
    assert_fraction(ember.bernoulli(ember.zeros(N, dtype=ember.int64), 0.3, generator=seeded(4)).numpy(), 0.3)
    assert ember.bernoulli(ember.zeros(2, dtype=ember.int64), 0.5).dtype == ember.int64
    assert_fraction(ember.full((N,), 0.5).bernoulli(0.25, generator=seeded(5)).numpy(), 0.25)
    assert_fraction(ember.full((N,), 0.7).bernoulli(generator=seeded(6)).numpy(), 0.7)
    assert ember.bernoulli(ember.full((2,), 0.5, dtype=ember.float16)).dtype == ember.float16


def test_bernoulli_out_takes_outs_dtype_and_the_p_form_refuses_out():
    out = ember.empty(2, 3, dtype=ember.int64)
    assert ember.bernoulli(ember.full((2, 3), 0.5), out=out) is out and out.dtype == ember.int64
    boolean = ember.bernoulli(ember.full((2, 3), 1.0), out=ember.empty(2, 3, dtype=ember.bool))
    assert boolean.dtype == ember.bool and boolean.all().item()
    with pytest.raises(TypeError, match=re.escape("bernoulli() received an invalid combination of arguments - got "
                                                  "(Tensor, float, out=Tensor)")):
        ember.bernoulli(ember.full((2,), 0.5), 0.3, out=ember.empty(2))
    with pytest.raises(TypeError, match=re.escape("got (Tensor, Tensor)")):
        ember.bernoulli(ember.full((2,), 0.5), ember.full((2,), 0.3))
    with pytest.raises(TypeError, match=re.escape("bernoulli() received an invalid combination of arguments - got "
                                                  "(Tensor), but expected one of:\n * (*, torch.Generator")):
        ember.full((2,), 0.5).bernoulli(ember.full((2,), 0.3))
    with pytest.raises(TypeError, match=re.escape("argument 'input' (position 1) must be Tensor, not list")):
        ember.bernoulli([0.5])


def test_bernoulli_refuses_what_torch_refuses_and_has_torchs_gradients():
    with pytest.raises(RuntimeError, match=re.escape("Expected p_in >= 0 && p_in <= 1 to be true, but got false.")):
        ember.bernoulli(ember.tensor([0.5, 1.5]))
    with pytest.raises(RuntimeError, match=re.escape("Expected p_in >= 0 && p_in <= 1")):
        ember.bernoulli(ember.tensor([math.nan]))
    with pytest.raises(NotImplementedError,
                       match=re.escape("\"bernoulli_tensor_cpu_p_\" not implemented for 'Long'")):
        ember.bernoulli(ember.ones(2, dtype=ember.int64))
    with pytest.raises(RuntimeError, match=re.escape("bernoulli_ expects p to be in [0, 1], but got p=1.5")):
        ember.bernoulli(ember.ones(2), 1.5)
    probabilities = ember.full((3,), 0.5, requires_grad=True)
    draws = ember.bernoulli(probabilities)
    assert draws.requires_grad
    draws.sum().backward()
    assert probabilities.grad.tolist() == [0.0] * 3
    with pytest.raises(RuntimeError, match=re.escape("derivative for aten::bernoulli is not implemented")):
        ember.bernoulli(probabilities, 0.5).sum().backward()


def test_bernoulli_in_place_takes_a_number_or_a_broadcast_tensor_p():
    x = ember.zeros(N // 4, 4)
    p = ember.tensor([0.2, 0.5, 0.8, 1.0])
    assert x.bernoulli_(p, generator=seeded(7)) is x and x._version == 1
    for column, probability in enumerate([0.2, 0.5, 0.8]):
        assert_fraction(x[:, column].numpy(), probability)
    assert (x[:, 3].numpy() == 1).all()
    integers = ember.zeros(N, dtype=ember.int64).bernoulli_(0.3, generator=seeded(8))
    assert integers.dtype == ember.int64 and set(np.unique(integers.numpy())) == {0, 1}
    assert_fraction(integers.numpy(), 0.3)
    assert ember.zeros(2, 3, dtype=ember.bool).bernoulli_(1.0).all().item()
    assert ember.zeros(2, 3).bernoulli_(ember.tensor(1.0)).all().item()
    assert ember.zeros(2, 3).bernoulli_(1).all().item()
    for p, message in ((1.5, "bernoulli_ expects p to be in [0, 1], but got p=1.5"),
                       (-0.5, "bernoulli_ expects p to be in [0, 1], but got p=-0.5"),
                       (math.nan, "bernoulli_ expects p to be in [0, 1], but got p=nan"),
                       (ember.full((2, 3), 1.5), "Expected p_in >= 0 && p_in <= 1 to be true, but got false."),
                       (ember.full((4,), 0.3), "The expanded size of the tensor (3) must match the existing size (4) "
                                               "at non-singleton dimension 1.  Target sizes: [2, 3].  Tensor sizes: "
                                               "[4]")):
        with pytest.raises(RuntimeError, match=re.escape(message)):
            ember.zeros(2, 3).bernoulli_(p)
    with pytest.raises(NotImplementedError, match=re.escape("\"bernoulli_tensor_cpu_p_\" not implemented for 'Long'")):
        ember.zeros(2).bernoulli_(ember.ones(2, dtype=ember.int64))
    with pytest.raises(RuntimeError, match=LEAF_ERROR):
        ember.zeros(2, requires_grad=True).bernoulli_(0.5)
    history = ember.zeros(3, requires_grad=True)
    filled = (history * 2).bernoulli_(0.5)
    assert filled.requires_grad
    filled.sum().backward()
    assert history.grad.tolist() == [0.0] * 3


# ----------------------------------------------------------------------------- poisson

def test_poisson_draws_non_negative_integers_with_the_rates_mean_and_variance():
    g = seeded(9)
    for rate in (0.5, 4.0, 30.0):
        draws = ember.poisson(ember.full((N,), rate, dtype=ember.float64), g).numpy()
        assert (draws >= 0).all() and (draws == np.round(draws)).all()
        assert_moments(draws, rate, rate, fourth_central=rate * (1 + 3 * rate))
    assert ember.poisson(ember.zeros(5)).tolist() == [0.0] * 5
    assert ember.poisson(ember.ones(3, dtype=ember.float16)).dtype == ember.float16
    rates = ember.full((3,), 2.0, requires_grad=True)
    counts = ember.poisson(rates, generator=seeded(1))
    assert counts.requires_grad
    counts.sum().backward()
    assert rates.grad.tolist() == [0.0] * 3
    with pytest.raises(RuntimeError, match="invalid Poisson rate, expected rate to be non-negative"):
        ember.poisson(ember.tensor([1.0, -2.0]))
    with pytest.raises(NotImplementedError, match=re.escape("\"poisson_cpu\" not implemented for 'Long'")):
        ember.poisson(ember.ones(2, dtype=ember.int64))
    with pytest.raises(TypeError, match=re.escape("poisson(): argument 'input' (position 1) must be Tensor, not list")):
        ember.poisson([1.0])


# ----------------------------------------------------------------------------- in-place distributions

def test_exponential_cauchy_log_normal_and_geometric_fills_follow_their_distributions():
    g = seeded(10)
    e = ember.zeros(N, dtype=ember.float64)
    assert e.exponential_(2.0, generator=g) is e and (e.numpy() > 0).all()
    assert_moments(e.numpy(), 0.5, 0.25, fourth_central=9 / 2.0 ** 4)
    c = ember.zeros(N, dtype=ember.float64).cauchy_(1.0, 2.0, generator=g).numpy()  # quartiles at median -+ sigma
    assert_fraction(c < 1.0, 0.5)
    assert_fraction(c < 3.0, 0.75)
    assert_fraction(c < -1.0, 0.25)
    logs = np.log(ember.zeros(N, dtype=ember.float64).log_normal_(0.5, 0.75, generator=g).numpy())
    assert_moments(logs, 0.5, 0.75 ** 2)
    assert (ember.zeros(10).log_normal_().numpy() > 0).all()
    for dtype in (ember.float32, ember.int64):
        trials = ember.zeros(N, dtype=dtype).geometric_(0.25, generator=g)
        values = trials.numpy().astype(np.float64)
        assert trials.dtype == dtype and (values >= 1).all() and (values == np.round(values)).all()
        p = 0.25  # mean 1/p, variance (1-p)/p^2, fourth central moment (1-p)(p^2 - 9p + 9)/p^4
        assert_moments(values, 1 / p, (1 - p) / p ** 2, fourth_central=(1 - p) * (p * p - 9 * p + 9) / p ** 4)
    assert ember.zeros(3, dtype=ember.float16).exponential_().dtype == ember.float16


def test_in_place_distributions_refuse_what_torch_refuses():
    cases = [
        (lambda: ember.zeros(3).exponential_(-1.0), RuntimeError,
         "exponential_ expects lambda > 0.0, but found lambda=-1"),
        (lambda: ember.zeros(3).exponential_(0.0), RuntimeError,
         "exponential_ expects lambda > 0.0, but found lambda=0"),
        (lambda: ember.zeros(3, dtype=ember.int64).exponential_(), RuntimeError,
         "Exponential distribution is a continuous probability distribution. dtype must be a floating point but you "
         "specified Long"),
        (lambda: ember.zeros(3).exponential_("a"), TypeError,
         "exponential_(): argument 'lambd' (position 1) must be float, not str"),
        (lambda: ember.zeros(3).cauchy_(0, 0), RuntimeError, "cauchy_ expects sigma > 0.0, but found sigma=0"),
        (lambda: ember.zeros(3, dtype=ember.int64).cauchy_(), RuntimeError,
         "Cauchy distribution is a continuous probability distribution. dtype must be a floating point but you "
         "specified long int"),
        (lambda: ember.zeros(3).log_normal_(1, -1), RuntimeError, "log_normal_ expects std > 0.0, but found std=-1"),
        (lambda: ember.zeros(3, dtype=ember.int64).log_normal_(), NotImplementedError,
         "\"log_normal_cpu\" not implemented for 'Long'"),
        (lambda: ember.zeros(3).geometric_(1), RuntimeError, "geometric_ expects p to be in (0, 1), but got p=1"),
        (lambda: ember.zeros(3).geometric_(0), RuntimeError, "geometric_ expects p to be in (0, 1), but got p=0"),
        (lambda: ember.zeros(3, dtype=ember.bool).geometric_(0.5), NotImplementedError,
         "\"geometric_cpu\" not implemented for 'Bool'"),
        (lambda: ember.zeros(3).fill_(ember.ones(1)), RuntimeError,
         "fill_ only supports 0-dimension value tensor but got tensor with 1 dimensions."),
        (lambda: ember.zeros(3).fill_(ember.ones(1, 1)), RuntimeError,
         "fill_ only supports 0-dimension value tensor but got tensor with 2 dimensions."),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            call()
    with pytest.raises(TypeError):
        ember.zeros(3).exponential_(1.0, seeded())  # generator is keyword-only, as in torch
    for fill in (lambda t: t.exponential_(), lambda t: t.cauchy_(), lambda t: t.log_normal_(),
                 lambda t: t.geometric_(0.5), lambda t: t.random_()):
        with pytest.raises(RuntimeError, match=LEAF_ERROR):
            fill(ember.zeros(2, requires_grad=True))
    assert ember.zeros(3).fill_(ember.tensor(2.0)).tolist() == [2.0] * 3


# ----------------------------------------------------------------------------- random_

def test_random_takes_torchs_from_and_to_keywords():
    g = seeded(11)
    x = ember.zeros(N)
    assert x.random_(to=3, generator=g) is x
    assert sorted(np.unique(x.numpy())) == [0.0, 1.0, 2.0]
    for value in range(3):
        assert_fraction(x.numpy() == value, 1 / 3)
    assert sorted(np.unique(ember.zeros(2000).random_(2, to=5).numpy())) == [2.0, 3.0, 4.0]
    assert sorted(np.unique(ember.zeros(2000).random_(**{"from": -5, "to": -2}).numpy())) == [-5.0, -4.0, -3.0]
    assert sorted(np.unique(ember.zeros(2000).random_(4).numpy())) == [0.0, 1.0, 2.0, 3.0]
    tail = ember.zeros(2000).random_(2 ** 24 - 2, None).numpy()  # up to 2^24 inclusive for float32
    assert set(np.unique(tail)) == {2.0 ** 24 - 2, 2.0 ** 24 - 1, 2.0 ** 24}
    assert set(np.unique(ember.zeros(2000, dtype=ember.int8).random_(125, None).numpy())) == {125, 126, 127}
    full = ember.zeros(2000, dtype=ember.int64).random_(-2 ** 63, None).numpy()
    assert (full < 0).any() and (full > 0).any()
    assert ember.zeros(3).random_(ember.tensor(3)).max().item() < 3


def test_random_default_range_is_torchs_for_each_dtype():
    limits = {ember.float32: 2 ** 24, ember.float64: 2 ** 53, ember.float16: 2 ** 11, ember.int64: 2 ** 63 - 1,
              ember.int32: 2 ** 31 - 1, ember.int16: 2 ** 15 - 1, ember.int8: 127, ember.uint8: 255, ember.bool: 1}
    for dtype, high in limits.items():
        values = ember.zeros(20_000, dtype=dtype).random_(generator=seeded(12)).numpy().astype(np.float64)
        assert values.min() >= 0 and values.max() <= high and values.max() > 0.99 * high, dtype
        assert (values == np.round(values)).all()


def test_random_refuses_what_torch_refuses():
    cases = [
        (lambda: ember.zeros(5).random_(5, 2), RuntimeError,
         "random_ expects 'from' to be less than 'to', but got from=5 >= to=2"),
        (lambda: ember.zeros(5).random_(0), RuntimeError,
         "random_ expects 'from' to be less than 'to', but got from=0 >= to=0"),
        (lambda: ember.zeros(5, dtype=ember.uint8).random_(-5, -2), RuntimeError,
         "from is out of bounds for unsigned char"),
        (lambda: ember.zeros(5, dtype=ember.uint8).random_(0, 300), RuntimeError,
         "to - 1 is out of bounds for unsigned char"),
        (lambda: ember.zeros(5, dtype=ember.int8).random_(300), RuntimeError,
         "to - 1 is out of bounds for signed char"),
        (lambda: ember.zeros(5, dtype=ember.int16).random_(-2 ** 62, 0), RuntimeError,
         "from is out of bounds for short int"),
        (lambda: ember.zeros(5, dtype=ember.bool).random_(0, 3), RuntimeError, "to - 1 is out of bounds for bool"),
        (lambda: ember.zeros(5, dtype=ember.float16).random_(-2 ** 62, 0), RuntimeError,
         "from is out of bounds for c10::Half"),
        (lambda: ember.zeros(5).random_(2 ** 24 + 10, None), RuntimeError,
         "random_ expects 'from' casted to dtype to be less than or equal to 'to_inc' casted to dtype, but got "
         "from=16777226 > to_inc=16777216"),
        (lambda: ember.zeros(5, dtype=ember.int32).random_(-2 ** 63, None), RuntimeError,
         "random_full_64_bits_range_kernel_cpu handles only int64, double, float and bfloat16"),
        (lambda: ember.zeros(5).random_(1.5), TypeError, "random_() received an invalid combination of arguments - "
                                                         "got (float), but expected one of:"),
        (lambda: ember.zeros(5).random_(**{"from": 2}), TypeError, "got (from=int, )"),
        (lambda: ember.zeros(5).random_(to=None), TypeError, "got (to=NoneType, )"),
        (lambda: ember.zeros(5).random_(True), TypeError, "got (bool)"),
        (lambda: ember.zeros(5).random_(0, 2, seeded()), TypeError, "random_() takes 2 positional arguments but 3 "
                                                                    "were given"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            call()
    with pytest.warns(UserWarning, match=re.escape(
            "to - 1 is out of bounds [-(2^24), 2^24]. Due to precision limitations float can support discrete "
            "uniform distribution only within this range.")):
        ember.zeros(5).random_(2 ** 25)


# ----------------------------------------------------------------------------- reproducibility and compile

def test_draws_repeat_with_the_same_seed_and_a_generator_leaves_the_default_stream_alone():
    draws = [
        lambda g: ember.normal(ember.zeros(4), ember.ones(4), generator=g),
        lambda g: ember.normal(0.0, 1.0, (4,), generator=g),
        lambda g: ember.bernoulli(ember.full((8,), 0.5), generator=g),
        lambda g: ember.poisson(ember.full((4,), 3.0), generator=g),
        lambda g: ember.zeros(4).cauchy_(generator=g),
        lambda g: ember.zeros(4).log_normal_(generator=g),
        lambda g: ember.zeros(4).geometric_(0.3, generator=g),
        lambda g: ember.zeros(4).exponential_(generator=g),
        lambda g: ember.zeros(8).bernoulli_(0.5, generator=g),
        lambda g: ember.zeros(4).random_(0, 1000, generator=g),
    ]
    for draw in draws:
        np.testing.assert_array_equal(draw(seeded(5)).numpy(), draw(seeded(5)).numpy())
        assert not np.array_equal(draw(seeded(5)).numpy(), draw(seeded(6)).numpy())
        ember.manual_seed(21)
        first = draw(None).numpy()
        ember.manual_seed(21)
        np.testing.assert_array_equal(draw(None).numpy(), first)
        ember.manual_seed(21)
        expected = ember.rand(3).numpy()
        ember.manual_seed(21)
        draw(seeded(1))
        np.testing.assert_array_equal(ember.rand(3).numpy(), expected)


def test_compiled_normal_and_bernoulli_draw_afresh_on_every_call_from_the_same_distribution():
    ember.manual_seed(0)
    sample = ember.compile(lambda mean, std, p: (ember.normal(mean, std), ember.bernoulli(p),
                                                 ember.normal(mean, 2.0)))
    mean = ember.full((N // 2,), 1.0)
    std = ember.full((N // 2,), 3.0)
    p = ember.full((N // 2,), 0.3)
    first, second = sample(mean, std, p), sample(mean, std, p)
    for a, b in zip(first, second):
        assert a.shape == (N // 2,) and not np.array_equal(a.numpy(), b.numpy())
    for draws in (first, second):
        assert_moments(draws[0].numpy(), 1.0, 9.0)
        assert set(np.unique(draws[1].numpy())) == {0.0, 1.0}
        assert_fraction(draws[1].numpy(), 0.3)
        assert_moments(draws[2].numpy(), 1.0, 4.0)
    fills = ember.compile(lambda x: (x.clone().exponential_(2.0), x.clone().bernoulli_(0.25),
                                     x.clone().geometric_(0.5)))
    zeros = ember.zeros(N // 2)
    once, again = fills(zeros), fills(zeros)
    assert not np.array_equal(once[0].numpy(), again[0].numpy())
    assert_moments(once[0].numpy(), 0.5, 0.25, fourth_central=9 / 2.0 ** 4)
    assert_fraction(once[1].numpy(), 0.25)
    assert (once[2].numpy() >= 1).all()
    assert_moments(once[2].numpy(), 2.0, 2.0, fourth_central=0.5 * (0.25 - 4.5 + 9) / 0.5 ** 4)
    assert (zeros.numpy() == 0).all()


def test_compiled_normal_passes_torchs_zero_gradients():
    compiled = ember.compile(lambda mean, std: (ember.normal(mean, std) * 3).sum())
    mean = ember.zeros(4, requires_grad=True)
    std = ember.ones(4, requires_grad=True)
    total = compiled(mean, std)
    assert total.requires_grad
    total.backward()
    assert mean.grad.tolist() == [0.0] * 4 and std.grad.tolist() == [0.0] * 4


@pytest.mark.parametrize("draw, what", [
    (lambda x: x + ember.poisson(ember.full((50,), 4.0)), "poisson"),
    (lambda x: x + ember.randint(0, 1000, (50,)), "randint"),
    (lambda x: x + ember.randperm(50), "randperm"),
    (lambda x: x + ember.empty(50).random_(0, 1000), "random_"),
    (lambda x: x + ember.rand(50, generator=ember.Generator().manual_seed(0)), "rand(generator=...)"),
    (lambda x: x + ember.nn.init.normal_(ember.empty(50)), "ember.nn.init"),
])
def test_draws_a_compiled_program_cannot_repeat_run_eagerly_and_stay_fresh(draw, what):
    # numpy's draws (and those from a given generator) would be frozen into the trace: the call
    # runs eagerly instead, saying why, and every call draws anew
    compiled = ember.compile(draw)
    x = ember.zeros(50)
    results = [compiled(x).numpy().copy() for _ in range(3)]
    assert not np.array_equal(results[1], results[2]) or what == "rand(generator=...)"
    assert compiled.report.compiled_calls == 0
    assert any(what in reason for reason in compiled.report.eager_reasons), compiled.report.eager_reasons


def test_normal_and_uniform_fills_compile_and_draw_afresh_each_call():
    def fills(x):
        return x + ember.empty(4000).normal_(2.0, 0.5), x + ember.empty(4000).uniform_(**{"from": 1.0, "to": 3.0})

    compiled = ember.compile(fills)
    x = ember.zeros(4000)
    draws = [[t.numpy().copy() for t in compiled(x)] for _ in range(4)]
    assert compiled.report.compiled_calls >= 2 and not compiled.report.eager_reasons
    assert not np.array_equal(draws[2][0], draws[3][0]) and not np.array_equal(draws[2][1], draws[3][1])
    normal, uniform = draws[3]
    assert abs(normal.mean() - 2.0) < 5 * 0.5 / np.sqrt(4000) and abs(normal.std() - 0.5) < 0.05
    assert uniform.min() >= 1.0 and uniform.max() < 3.0 and abs(uniform.mean() - 2.0) < 5 * 0.58 / np.sqrt(4000)
    with pytest.raises(RuntimeError, match="normal expects std >= 0.0, but found std -1"):
        ember.empty(3).normal_(0, -1)
    with pytest.raises(RuntimeError, match=r"uniform_ expects to return a \[from, to\) range, but found from=2 > to=1"):
        ember.empty(3).uniform_(2, 1)
    with pytest.raises(NotImplementedError, match="\"normal_kernel_cpu\" not implemented for 'Long'"):
        ember.zeros(3, dtype=ember.int64).normal_()
