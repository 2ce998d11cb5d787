"""Tensor creation as PyTorch does it: dtype inference in ember.tensor, copy vs shared
memory, zeros/ones/full/arange/linspace/eye and their dtypes, *_like and new_*, seeded
random tensors, the legacy constructors, conversions, and size checking.
"""
import numpy as np
import pytest

import ember


@pytest.mark.parametrize("data, dtype", [
    ([1.0, 2], ember.float32), ([1, 2], ember.int64), ([True, False], ember.bool), ([True, 2], ember.int64),
    ([1, 2.5], ember.float32), (5, ember.int64), (2.5, ember.float32), (True, ember.bool), ([], ember.float32),
    (np.array([1.5]), ember.float64), (np.array([1], np.int32), ember.int32), (np.array([1], np.uint8), ember.uint8),
    (np.float64(1.5), ember.float64), (np.int32(3), ember.int32), (np.bool_(True), ember.bool),
    ([np.float32(1.0), np.float32(2.0)], ember.float32),
], ids=lambda v: type(v).__name__ if not isinstance(v, ember.dtype) else v.name)
def test_tensor_infers_pytorch_dtypes(data, dtype):
    assert ember.tensor(data).dtype is dtype


def test_tensor_from_tensors_and_explicit_dtypes():
    assert ember.tensor([ember.tensor(1.0), ember.tensor(2.0)]).tolist() == [1.0, 2.0]
    assert ember.tensor(ember.tensor([1, 2])).dtype is ember.int64
    assert ember.tensor([1, 2], dtype=ember.float64).dtype is ember.float64
    assert ember.tensor([1, 2], dtype="float64").dtype is ember.float64
    assert ember.tensor([1.7, -1.7], dtype=ember.int64).tolist() == [1, -1]
    assert ember.tensor([[], []]).shape == (2, 0)


def test_tensor_copies_while_as_tensor_and_from_numpy_share():
    a = np.zeros(2)
    copied = ember.tensor(a)
    copied[0] = 5.0
    assert a[0] == 0.0
    shared = ember.from_numpy(a)
    shared[0] = 5.0
    assert a[0] == 5.0
    a[1] = 7.0
    assert shared.tolist() == [5.0, 7.0]
    assert ember.as_tensor(a)._data is a
    t = ember.tensor([1.0])
    assert ember.as_tensor(t) is t
    assert ember.as_tensor(t, dtype=ember.float64).dtype is ember.float64
    with pytest.raises(TypeError, match="expected np.ndarray"):
        ember.from_numpy([1, 2])


def test_default_dtype_applies_to_python_floats_and_float_factories():
    previous = ember.get_default_dtype()
    ember.set_default_dtype(ember.float64)
    try:
        assert ember.tensor([1.5]).dtype is ember.float64
        assert ember.zeros(2).dtype is ember.float64
        assert ember.arange(0.0, 1.0, 0.5).dtype is ember.float64
        assert ember.tensor(np.array([1.5], np.float32)).dtype is ember.float32  # numpy keeps its dtype
    finally:
        ember.set_default_dtype(previous)


def test_zeros_ones_empty_full_accept_any_size_spelling():
    for make in (ember.zeros, ember.ones, ember.empty, ember.rand, ember.randn):
        assert make(2, 3).shape == (2, 3)
        assert make((2, 3)).shape == (2, 3)
        assert make([2, 3]).shape == (2, 3)
        assert make(ember.Size([2, 3])).shape == (2, 3)
        assert make(ember.tensor(2), 3).shape == (2, 3)
    assert ember.zeros(()).shape == () and ember.zeros(0).shape == (0,)
    assert ember.ones(2, dtype=ember.int32).tolist() == [1, 1]
    assert ember.ones(2, dtype=ember.bool).dtype is ember.bool


def test_sizes_must_be_non_negative_ints():
    with pytest.raises(TypeError, match="size must be a tuple of ints, but found element of type float"):
        ember.zeros(2.5)
    with pytest.raises(TypeError, match="element of type str"):
        ember.ones("a")
    with pytest.raises(RuntimeError, match=r"negative dimension: \[-1, 2\]"):
        ember.zeros(-1, 2)


def test_full_infers_the_fill_dtype():
    assert ember.full((2,), 3).dtype is ember.int64
    assert ember.full((2,), 3.5).tolist() == [3.5, 3.5] and ember.full((2,), 3.5).dtype is ember.float32
    assert ember.full((2,), True).dtype is ember.bool
    assert ember.full(2, 7, dtype=ember.float64).dtype is ember.float64


def test_like_factories_follow_the_input():
    x = ember.tensor([[1, 2]])
    assert ember.zeros_like(x).dtype is ember.int64 and ember.zeros_like(x).shape == (1, 2)
    assert ember.ones_like(x, dtype=ember.float32).tolist() == [[1.0, 1.0]]
    assert ember.empty_like(x).shape == (1, 2)
    assert ember.full_like(x, 2.7).tolist() == [[2, 2]]  # cast to the input's dtype
    assert ember.full_like(ember.tensor([1.0]), 7).tolist() == [7.0]
    assert ember.rand_like(ember.zeros(3, dtype=ember.float64)).dtype is ember.float64
    assert ember.randn_like(ember.zeros(2, 2)).shape == (2, 2)
    values = ember.randint_like(x, 10)
    assert values.dtype is ember.int64 and 0 <= values.min().item() and values.max().item() < 10
    assert ember.zeros_like(ember.zeros(2), requires_grad=True).requires_grad


def test_new_methods_take_the_source_dtype():
    x = ember.tensor([1, 2])
    assert x.new_zeros(2, 2).dtype is ember.int64 and x.new_zeros(2, 2).shape == (2, 2)
    assert ember.tensor([1.0]).new_ones((3,)).tolist() == [1.0, 1.0, 1.0]
    assert ember.tensor([1.0]).new_full((2,), 5).tolist() == [5.0, 5.0]
    assert ember.tensor([1.0]).new_tensor([3, 4]).dtype is ember.float32
    assert ember.tensor([1.0]).new_empty(2).shape == (2,)
    assert x.new_zeros(2, dtype=ember.float64).dtype is ember.float64


def test_arange_dtypes_and_steps():
    assert ember.arange(5).tolist() == [0, 1, 2, 3, 4] and ember.arange(5).dtype is ember.int64
    assert ember.arange(0, 1, 0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert ember.arange(0, 1, 0.25).dtype is ember.float32
    assert ember.arange(2.5).tolist() == [0.0, 1.0, 2.0]
    assert ember.arange(5, 0, -2).tolist() == [5, 3, 1]
    assert ember.arange(3, dtype=ember.float64).dtype is ember.float64
    assert ember.arange(ember.tensor(3)).tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError, match="step must be nonzero"):
        ember.arange(0, 3, 0)


def test_linspace_logspace_eye():
    np.testing.assert_allclose(ember.linspace(0, 1, 5).numpy(), np.linspace(0, 1, 5, dtype=np.float32))
    assert ember.linspace(0, 10, 3, dtype=ember.int64).tolist() == [0, 5, 10]
    assert ember.linspace(-1, 1, 1).tolist() == [-1.0]
    np.testing.assert_allclose(ember.logspace(0, 2, 3).numpy(), [1.0, 10.0, 100.0])
    assert ember.eye(2, 3).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert ember.eye(2, dtype=ember.int64).dtype is ember.int64


def test_random_tensors_are_seeded_and_in_range():
    ember.manual_seed(123)
    first = (ember.rand(100), ember.randn(100), ember.randint(0, 5, (100,)), ember.randperm(10))
    ember.manual_seed(123)
    again = (ember.rand(100), ember.randn(100), ember.randint(0, 5, (100,)), ember.randperm(10))
    for a, b in zip(first, again):
        assert a.tolist() == b.tolist()
    uniform, normal, ints, perm = first
    assert 0.0 <= uniform.min().item() and uniform.max().item() < 1.0
    assert abs(normal.mean().item()) < 0.3 and 0.7 < normal.std().item() < 1.3
    assert ints.dtype is ember.int64 and set(ints.tolist()) == {0, 1, 2, 3, 4}
    assert sorted(perm.tolist()) == list(range(10))
    assert ember.randint(5, (3,)).max().item() < 5  # randint(high, size)
    generator = ember.Generator().manual_seed(7)
    assert ember.rand(3, generator=generator).tolist() == ember.rand(3, generator=ember.Generator().manual_seed(7)).tolist()


def test_legacy_constructors():
    assert ember.Tensor(2, 3).shape == (2, 3) and ember.Tensor(2, 3).dtype is ember.float32
    assert ember.Tensor([1, 2]).dtype is ember.float32
    assert ember.Tensor().shape == (0,)
    assert ember.FloatTensor(2).tolist() == [0.0, 0.0]
    assert ember.LongTensor([1.5, 2]).tolist() == [1, 2]
    assert ember.DoubleTensor([1]).dtype is ember.float64
    assert ember.BoolTensor([0, 1]).tolist() == [False, True]


def test_requires_grad_at_creation():
    for make in (lambda: ember.zeros(2, requires_grad=True), lambda: ember.tensor([1.0], requires_grad=True),
                 lambda: ember.randn(2, requires_grad=True), lambda: ember.arange(3.0, requires_grad=True)):
        t = make()
        assert t.requires_grad and t.is_leaf


def test_conversions():
    x = ember.tensor([1.7, -1.7])
    assert x.long().tolist() == [1, -1] and x.int().dtype is ember.int32
    assert x.double().dtype is ember.float64 and x.half().dtype is ember.float16
    assert ember.tensor([0.0, 2.0]).bool().tolist() == [False, True]
    assert ember.tensor([1, 2]).float().dtype is ember.float32
    assert x.to(ember.float64).dtype is ember.float64
    assert x.to(ember.tensor([1], dtype=ember.int32)).dtype is ember.int32
    assert x.to("cpu", ember.float16).dtype is ember.float16
    assert x.to(ember.float32) is x and x.to(ember.float32, copy=True) is not x
    assert x.type("torch.DoubleTensor").dtype is ember.float64
    assert x.device == ember.device("cpu") and str(x.device) == "cpu"


def test_integer_overflow_is_refused():
    with pytest.raises(RuntimeError, match="overflows int64"):
        ember.tensor([2 ** 63])
    assert ember.tensor([2 ** 63 - 1]).item() == 2 ** 63 - 1
