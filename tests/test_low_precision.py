"""float16 and bfloat16 tensors (issue 11): stored in their 2-byte dtype, computed as PyTorch's
CPU does (each op in float32, rounded once to the result's dtype), eagerly and compiled; and the
small integer dtypes (int8, uint8, int16) compiled with their wrap-around arithmetic.

Expected values: numpy in float64 (or float32 where PyTorch's CPU computes in float32) rounded
once with numpy's float16 and ml_dtypes' bfloat16, independent of ember's implementation.
"""
import io

import ml_dtypes
import numpy as np
import pytest

import ember as torch
import ember.nn as nn
import ember.nn.functional as F

RNG = np.random.default_rng(7)
LOW = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def as_low(array, name):
    return torch.tensor(np.asarray(array, np.float32)).to(getattr(torch, name))


def rounded(reference, name):
    """A float64 reference rounded once to the 2-byte dtype, as float64 again for comparisons."""
    return np.asarray(reference, np.float32).astype(LOW[name]).astype(np.float64)


def values(tensor):
    return tensor.detach().float().numpy().astype(np.float64)


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_storage_is_two_bytes_and_reads_as_the_dtype(name):
    x = torch.randn(3, 4, dtype=getattr(torch, name))
    assert x.dtype is getattr(torch, name) and x.element_size() == 2 and x.is_floating_point()
    assert x.numpy().dtype == np.dtype(LOW[name]) and x.numpy().itemsize == 2
    assert repr(x).endswith(f"dtype=ember.{name})")
    assert torch.zeros(2).bfloat16().dtype is torch.bfloat16 and torch.zeros(2).half().dtype is torch.float16


def test_promotion_follows_pytorch():
    bf, f16 = torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float16)
    assert (bf + f16).dtype is torch.float32  # neither holds the other
    assert (bf + 1.5).dtype is torch.bfloat16 and (bf + torch.tensor(2.0)).dtype is torch.bfloat16
    assert (bf + torch.ones(2, dtype=torch.int64)).dtype is torch.bfloat16
    assert (bf + torch.ones(2)).dtype is torch.float32 and (f16 * torch.ones(2, dtype=torch.float64)).dtype is torch.float64
    assert torch.promote_types(torch.bfloat16, torch.float16) is torch.float32


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_reductions_and_products_accumulate_in_float32(name):
    ones = torch.ones(3000, dtype=getattr(torch, name))
    # numpy's own float16 sum stalls at 2048 (it adds in float16); PyTorch adds in float32
    assert values(ones.sum()) == rounded(3000.0, name)
    assert values(ones.cumsum(0))[-1] == rounded(3000.0, name)
    a, b = RNG.standard_normal((24, 300)), RNG.standard_normal((300, 16))
    la, lb = as_low(a, name), as_low(b, name)
    exact_a, exact_b = values(la), values(lb)  # the inputs as stored
    np.testing.assert_allclose(values(la @ lb), rounded(exact_a @ exact_b, name), rtol=1e-2 if name == "bfloat16" else 1e-3,
                               atol=1e-2)
    np.testing.assert_array_equal(values(la.mean(1)), rounded(exact_a.mean(1), name))
    np.testing.assert_array_equal(values(la.var(1)), rounded(exact_a.var(1, ddof=1), name))


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_composites_round_once_like_pytorch_kernels(name):
    x = as_low(RNG.standard_normal((8, 64)), name)
    exact = values(x)
    shifted = exact - exact.max(1, keepdims=True)
    softmax = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    np.testing.assert_array_equal(values(torch.softmax(x, 1)), rounded(softmax, name))
    normed = (exact - exact.mean(1, keepdims=True)) / np.sqrt(exact.var(1, keepdims=True) + 1e-5)
    got = values(F.layer_norm(x, (64,)))
    assert np.mean(got == rounded(normed, name)) > 0.99  # float32 vs float64 inside: a rare ulp
    from math import erf
    gelu = exact * 0.5 * (1 + np.vectorize(erf)(exact / np.sqrt(2)))
    assert np.mean(values(F.gelu(x)) == rounded(gelu, name)) > 0.99
    assert F.gelu(x).dtype is x.dtype and F.layer_norm(x, (64,)).dtype is x.dtype


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_elementwise_ops_round_each_result(name):
    a, b = as_low(RNG.standard_normal(200), name), as_low(RNG.standard_normal(200), name)
    ea, eb = values(a), values(b)
    number = float(rounded(1.1, name))
    # as PyTorch's CPU kernels: add rounds a Python number to the dtype first; mul and div keep it
    # in float32; add's alpha is rounded and the rest computed in float32
    for got, want in [(a * b + 1.1, rounded(rounded(ea * eb, name) + number, name)),
                      (a * 1.1, rounded(ea.astype(np.float32) * np.float32(1.1), name)),
                      (a / 3.3, rounded(ea.astype(np.float32) / np.float32(3.3), name)),
                      (a.add(b, alpha=1.1), rounded(ea + number * eb, name)),
                      (a.exp(), rounded(np.exp(ea), name)), (a / b, rounded(ea / eb, name)),
                      (torch.tanh(a), rounded(np.tanh(ea), name))]:
        np.testing.assert_array_equal(values(got), want)


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_gradients_have_the_leaf_dtype(name):
    x = as_low(RNG.standard_normal(10), name).requires_grad_()
    (x * x * 3).sum().backward()
    assert x.grad.dtype is x.dtype
    np.testing.assert_allclose(values(x.grad), 6 * values(x), rtol=1e-2)


def _train(dtype, compiled, steps=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 5)).to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 20).to(dtype), torch.randint(0, 5, (16,))

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    run = torch.compile(step) if compiled else step
    losses = [run(x, y).item() for _ in range(steps)]
    return losses, model


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_training_compiled_equals_eager(name):
    dtype = getattr(torch, name)
    eager_losses, eager_model = _train(dtype, compiled=False)
    compiled_losses, compiled_model = _train(dtype, compiled=True)
    assert eager_losses[-1] < eager_losses[0]
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=2e-2)
    for p, q in zip(eager_model.parameters(), compiled_model.parameters()):
        assert q.dtype is dtype
        np.testing.assert_allclose(values(q), values(p), atol=3e-2)


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_compiled_kernels_store_the_two_byte_dtype(name):
    dtype = getattr(torch, name)
    x = as_low(RNG.standard_normal((8, 33)) * 3, name)
    cases = [lambda a: a * 1.1 + 2, lambda a: a.exp().sum(1), lambda a: (a.float() * 3.3).to(a.dtype),
             lambda a: a.double().to(a.dtype), lambda a: (a * 1000).to(torch.int16), lambda a: a.relu().amax(1),
             lambda a: a.to(torch.float16 if name == "bfloat16" else torch.bfloat16)]
    for fn in cases:
        want, got = fn(x), torch.compile(fn)(x)
        assert got.dtype is want.dtype
        np.testing.assert_allclose(values(got), values(want), rtol=1e-2 if name == "bfloat16" else 1e-3)
    stored = values(x)
    np.testing.assert_array_equal(values(torch.compile(lambda a: (a.float() * 3.3).to(dtype))(x)),
                                  rounded(stored.astype(np.float32) * np.float32(3.3), name))
    assert torch.compile(lambda a: a * 2)(x).numpy().dtype == np.dtype(LOW[name])


def test_bfloat16_rounds_ties_to_even_and_keeps_nan_when_compiled():
    # 1 + 2^-8 is halfway between bfloat16's 1 and 1 + 2^-7: even is 1; 1 + 3 * 2^-8 goes up
    x = torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, float("nan"), float("inf"), -0.0, 3.3e38])
    got = torch.compile(lambda a: a.to(torch.bfloat16))(x).float().numpy()
    want = x.numpy().astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    assert np.signbit(got[4]) and np.isnan(got[2])


@pytest.mark.parametrize("name", ["int8", "uint8", "int16"])
def test_small_integers_compile_with_wraparound(name):
    np_type = np.dtype(name)
    a = torch.tensor(RNG.integers(0, 120, (5, 7)).astype(np_type))
    b = torch.tensor(RNG.integers(1, 120, (5, 7)).astype(np_type))
    cases = {"wrap": lambda x, y: x * y + 3, "floordiv": lambda x, y: x // y, "sub": lambda x, y: (x - y) // 3,
             "max": lambda x, y: torch.maximum(x - y, y), "lt": lambda x, y: (x - y) < y,
             "float": lambda x, y: (x - y).float() / 2, "sum": lambda x, y: x.sum(1)}
    an, bn = a.numpy(), b.numpy()
    with np.errstate(over="ignore"):
        references = {"wrap": an * bn + np_type.type(3), "floordiv": an // bn, "sub": (an - bn) // np_type.type(3),
                      "max": np.maximum(an - bn, bn), "lt": (an - bn) < bn,
                      "float": (an - bn).astype(np.float32) / 2, "sum": an.sum(1, dtype=np.int64)}
    for key, fn in cases.items():
        eager, compiled = fn(a, b), torch.compile(fn)(a, b)
        np.testing.assert_array_equal(eager.numpy(), references[key], err_msg=f"{name} {key} eager")
        np.testing.assert_array_equal(compiled.numpy(), references[key], err_msg=f"{name} {key} compiled")
        assert compiled.dtype is eager.dtype


def test_finfo_and_iinfo():
    info = torch.finfo(torch.bfloat16)
    assert (info.bits, info.eps, info.max, info.tiny, info.resolution, info.dtype) == (
        16, 2.0 ** -7, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max), 2.0 ** -126, 0.01, "bfloat16")
    assert torch.finfo(torch.float16).max == 65504.0 and torch.finfo().eps == np.finfo(np.float32).eps
    assert torch.finfo(torch.float64).min == -np.finfo(np.float64).max
    i8 = torch.iinfo(torch.int8)
    assert (i8.bits, i8.min, i8.max) == (8, -128, 127) and torch.iinfo(torch.int64).max == 2 ** 63 - 1
    with pytest.raises(TypeError, match="iinfo"):
        torch.finfo(torch.int32)
    with pytest.raises(TypeError, match="finfo"):
        torch.iinfo(torch.float32)


def test_bfloat16_save_load_and_state_dict():
    model = nn.Linear(3, 2).bfloat16()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    buffer = io.BytesIO()
    torch.save({"state": model.state_dict(), "view": model.weight[1:]}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    assert loaded["state"]["weight"].dtype is torch.bfloat16
    np.testing.assert_array_equal(values(loaded["state"]["weight"]), values(model.weight))
    assert loaded["view"].shape == (1, 3)


def test_float64_and_wide_integers_reach_two_byte_floats_through_float32():
    # as PyTorch: two roundings (1 + 2^-8 + 2^-30 -> float32 1 + 2^-8, a tie -> bfloat16 1.0)
    value = 1 + 2 ** -8 + 2 ** -30
    assert torch.tensor([value], dtype=torch.bfloat16).item() == 1.0
    assert torch.tensor([value], dtype=torch.float64).to(torch.bfloat16).item() == 1.0
    assert torch.compile(lambda x: x.to(torch.bfloat16))(torch.tensor([value], dtype=torch.float64)).item() == 1.0
    assert torch.tensor([1 + 2 ** -11 + 2 ** -40], dtype=torch.float16).item() == 1.0
    assert torch.tensor([2 ** 30 + 2 ** 22 + 1], dtype=torch.int32).to(torch.bfloat16).item() == 2.0 ** 30


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_composites_and_zero_dim_operands_compute_in_float32(name):
    dtype = getattr(torch, name)
    x = as_low([3.3, -7.25, 11.1, 0.2890625], name)
    exact = values(x)
    # a 0-d float32 tensor is used unrounded, as a Python number
    np.testing.assert_array_equal(values(x * torch.tensor(1.1)), rounded(exact.astype(np.float32) * np.float32(1.1), name))
    # cosh(11.1) = 33152 fits float16; exp(x) / 2 on the way (rounded) would overflow to inf
    np.testing.assert_array_equal(values(torch.cosh(x)), rounded(np.cosh(exact), name))
    np.testing.assert_array_equal(values(torch.fmod(x, 2.1)), rounded(np.fmod(exact, float(rounded(2.1, name))), name))
    assert torch.copysign(x, -1.0).dtype is dtype and torch.nan_to_num(x).dtype is dtype
    nan_inf = torch.tensor([float("nan"), float("inf"), -float("inf")]).to(dtype)
    assert values(torch.nan_to_num(nan_inf)).tolist() == [0.0, torch.finfo(dtype).max, torch.finfo(dtype).min]
    assert abs(torch.linalg.vector_norm(x).item() - np.linalg.norm(exact)) < 0.01 * np.linalg.norm(exact)


def test_numbers_outside_a_small_integer_dtype_wrap_and_integer_sums_keep_a_requested_dtype():
    int8 = torch.tensor([-128, 5], dtype=torch.int8)
    uint8 = torch.tensor([255, 3], dtype=torch.uint8)
    assert (int8 + 200).tolist() == [72, -51] and (uint8 == -1).tolist() == [True, False]
    assert torch.where(uint8 > 3, uint8, -1).tolist() == [255, 255]
    hundreds = torch.tensor([100, 100], dtype=torch.int8)
    assert hundreds.sum(dtype=torch.int8).item() == -56 and hundreds.sum(dtype=torch.int8).dtype is torch.int8
    assert hundreds.prod(dtype=torch.int8).item() == 16 and hundreds.cumsum(0, dtype=torch.int16).tolist() == [100, 200]
    assert hundreds.sum().dtype is torch.int64 and hundreds.sum().item() == 200
