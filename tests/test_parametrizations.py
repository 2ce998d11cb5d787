"""ember.nn.utils.parametrize (register_parametrization, remove_parametrizations, cached),
ember.nn.utils.parametrizations (weight_norm, spectral_norm) and the legacy hook-based
weight_norm / spectral_norm: the parameters, buffers and state_dict keys PyTorch creates, values
against numpy float64 references (power iteration rerun in numpy from the same initial vectors),
gradients against float64 finite differences, PyTorch's errors, and eager against ember.compile.
"""
import copy
import pickle
import re

import numpy as np
import pytest

import ember
from ember import nn
from ember.nn.utils import parametrize as P
from ember.nn.utils import parametrizations as PP
from gradcheck import check_module

RNG = np.random.default_rng(0)


class Symmetric(nn.Module):
    def forward(self, X):
        return ember.triu(X) + ember.triu(X, 1).T

    def right_inverse(self, A):
        return ember.triu(A)


class Scale(nn.Module):
    def forward(self, X):
        return X * 3

    def right_inverse(self, A):
        return A / 3


class RankOne(nn.Module):  # two originals: original0, original1
    def forward(self, x, y):
        return x.unsqueeze(-1) @ y.unsqueeze(-2)

    def right_inverse(self, Z):
        return Z[:, 0].clone(), ember.ones(Z.shape[1], dtype=Z.dtype)


class NoInverse(nn.Module):
    def forward(self, X):
        return X * 2


def values(module):
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}


def norm_except_dim(v, dim):
    """||v|| over every dim but `dim`, kept (dim None: over everything)."""
    if dim is None:
        return np.sqrt((v ** 2).sum())
    return np.sqrt((v ** 2).sum(axis=tuple(d for d in range(v.ndim) if d != dim % v.ndim), keepdims=True))


def normalized(x):
    return x / max(np.linalg.norm(x), 1e-12)


def as_matrix(w, dim):
    return np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1)


# ----------------------------------------------------------------------------- parametrize

def test_register_parametrization_moves_the_tensor_and_computes_it_on_access():
    m = nn.Linear(4, 4).double()
    weight = m.weight
    P.register_parametrization(m, "weight", Symmetric())
    assert type(m).__name__ == "ParametrizedLinear" and isinstance(m, nn.Linear)
    assert P.type_before_parametrizations(m) is nn.Linear
    assert m.parametrizations.weight.original is weight  # the same Parameter (optimizers keep it)
    assert [k for k, _ in m.named_parameters()] == ["bias", "parametrizations.weight.original"]
    assert list(m.state_dict()) == ["bias", "parametrizations.weight.original"]
    w = m.weight.detach().numpy()
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(m.parametrizations.weight.original.detach().numpy(), np.triu(w))
    assert P.is_parametrized(m) and P.is_parametrized(m, "weight") and not P.is_parametrized(m, "bias")
    assert repr(m) == ("ParametrizedLinear(\n  in_features=4, out_features=4, bias=True\n  (parametrizations): ModuleDict(\n"
                       "    (weight): ParametrizationList(\n      (0): Symmetric()\n    )\n  )\n)")
    A = RNG.standard_normal((4, 4))
    m.weight = ember.from_numpy(A + A.T)  # through right_inverse
    np.testing.assert_allclose(m.weight.detach().numpy(), A + A.T, rtol=1e-15)
    assert m.parametrizations.weight.original is weight


def test_gradients_flow_to_the_original_through_chained_parametrizations():
    m = nn.Linear(4, 4)
    P.register_parametrization(m, "weight", Symmetric())
    P.register_parametrization(m, "weight", Scale())
    P.register_parametrization(m, "bias", Scale())
    assert [type(p).__name__ for p in m.parametrizations.weight] == ["Symmetric", "Scale"]
    original = m.parametrizations.weight.original.detach().numpy().astype(np.float64)
    np.testing.assert_allclose(m.weight.detach().numpy(), 3 * (np.triu(original) + np.triu(original, 1).T), rtol=1e-6)
    m.weight = ember.ones(4, 4)  # right_inverse in reverse order: / 3, then triu
    np.testing.assert_allclose(m.parametrizations.weight.original.detach().numpy(), np.triu(np.ones((4, 4))) / 3)
    check_module(m, [RNG.standard_normal((3, 4))])


def test_a_right_inverse_returning_several_tensors_makes_original0_original1():
    m = nn.Linear(3, 2, bias=False).double()
    weight = m.weight.detach().numpy().copy()
    P.register_parametrization(m, "weight", RankOne())
    assert list(m.state_dict()) == ["parametrizations.weight.original0", "parametrizations.weight.original1"]
    np.testing.assert_array_equal(m.weight.detach().numpy(), np.outer(weight[:, 0], np.ones(3)))
    check_module(m, [RNG.standard_normal((2, 3))])
    with pytest.raises(ValueError, match=re.escape("Cannot leave unparametrized (`leave_parametrized=False`)")):
        P.remove_parametrizations(m, "weight", leave_parametrized=False)
    P.remove_parametrizations(m, "weight")
    assert type(m) is nn.Linear and isinstance(m._parameters["weight"], nn.Parameter)
    np.testing.assert_array_equal(m.weight.detach().numpy(), np.outer(weight[:, 0], np.ones(3)))


def test_remove_parametrizations_keeps_the_value_or_the_original_and_restores_the_class():
    m = nn.Linear(3, 3)
    bias = m.bias.detach().numpy().copy()
    P.register_parametrization(m, "weight", Symmetric())
    P.register_parametrization(m, "bias", NoInverse())
    original = m.parametrizations.weight.original
    symmetric = m.weight.detach().numpy().copy()
    P.remove_parametrizations(m, "weight")
    assert m.weight is original and list(m.state_dict()) == ["weight", "parametrizations.bias.original"]
    np.testing.assert_array_equal(m.weight.detach().numpy(), symmetric)
    assert type(m).__name__ == "ParametrizedLinear"
    P.remove_parametrizations(m, "bias", leave_parametrized=False)
    np.testing.assert_array_equal(m.bias.detach().numpy(), bias)
    assert type(m) is nn.Linear and not hasattr(m, "parametrizations") and list(m.state_dict()) == ["weight", "bias"]
    assert not P.is_parametrized(m)


def test_buffers_are_parametrized_as_buffers():
    bn = nn.BatchNorm1d(3)
    P.register_parametrization(bn, "running_var", NoInverse())
    assert [k for k, _ in bn.named_buffers()] == ["running_mean", "num_batches_tracked",
                                                  "parametrizations.running_var.original"]
    np.testing.assert_array_equal(bn.running_var.numpy(), 2 * np.ones(3))


def test_cached_computes_each_parametrized_tensor_once():
    calls = []

    class Counting(nn.Module):
        def forward(self, X):
            calls.append(1)
            return X * 1

    m = P.register_parametrization(nn.Linear(2, 2), "weight", Counting())
    calls.clear()
    with P.cached():
        with P.cached():
            first = m.weight
        assert m.weight is first
    assert len(calls) == 1
    assert m.weight is not first and len(calls) == 2


def test_parametrize_errors_match_pytorch():
    class Row(nn.Module):
        def forward(self, X):
            return X[0]

    class Double(nn.Module):
        def forward(self, X):
            return X.double()

    with pytest.raises(ValueError, match=re.escape("Module 'Linear(in_features=3, out_features=3, bias=True)' does "
                                                   "not have a parameter, a buffer, or a parametrized element with name 'foo'")):
        P.register_parametrization(nn.Linear(3, 3), "foo", Scale())
    with pytest.raises(ValueError, match=re.escape("Module Linear(in_features=3, out_features=3, bias=True) does not "
                                                   "have a parametrization on weight")):
        P.remove_parametrizations(nn.Linear(3, 3), "weight")
    with pytest.raises(ValueError, match=re.escape("may not change the shape of the tensor, unless `unsafe` flag is "
                                                   "enabled.\nunparametrized shape: ember.Size([3, 3])\nparametrized "
                                                   "shape: ember.Size([3])")):
        P.register_parametrization(nn.Linear(3, 3), "weight", Row())
    with pytest.raises(ValueError, match="unparametrized dtype: ember.float32\nparametrized dtype: ember.float64"):
        P.register_parametrization(nn.Linear(3, 3), "weight", Double())
    m = P.register_parametrization(nn.Linear(3, 3), "weight", Row(), unsafe=True)
    assert tuple(m.weight.shape) == (3,)
    m = P.register_parametrization(nn.Linear(3, 3), "weight", NoInverse())
    with pytest.raises(ValueError, match=re.escape("unless the `unsafe` flag is enabled.\nmodule.weight.shape: "
                                                   "ember.Size([3, 3])\nparametrization(module.weight).shape: ember.Size([3])")):
        P.register_parametrization(m, "weight", Row())
    with pytest.raises(RuntimeError, match="parametrization NoInverse does not implement right_inverse."):
        m.weight = ember.ones(3, 3)
    with pytest.raises(RuntimeError, match="Serialization of parametrized modules is only supported through state_dict"):
        pickle.dumps(m)
    clone = copy.deepcopy(m)
    assert type(clone).__name__ == "ParametrizedLinear"
    assert clone.parametrizations.weight.original is not m.parametrizations.weight.original
    np.testing.assert_array_equal(clone.weight.detach().numpy(), m.weight.detach().numpy())


def test_transfer_parametrizations_and_params_shares_the_originals():
    source = PP.spectral_norm(nn.Linear(3, 3))
    target = P.transfer_parametrizations_and_params(source, nn.Linear(3, 3))
    assert type(target).__name__ == "ParametrizedLinear"
    assert target.parametrizations.weight.original is source.parametrizations.weight.original


# ----------------------------------------------------------------------------- weight_norm

@pytest.mark.parametrize("dim,g_shape", [(0, (4, 1, 1, 1)), (1, (1, 3, 1, 1)), (None, ()), (-1, ()), (-3, (1, 3, 1, 1))])
def test_weight_norm_parametrization_values_names_and_gradients(dim, g_shape):
    conv = nn.Conv2d(3, 4, 2).double()
    weight = conv.weight.detach().numpy().copy()
    PP.weight_norm(conv, dim=dim)
    assert [(k, tuple(v.shape)) for k, v in conv.state_dict().items()] == [
        ("bias", (4,)), ("parametrizations.weight.original0", g_shape), ("parametrizations.weight.original1", (4, 3, 2, 2))]
    norm_dim = None if dim in (None, -1) else dim
    g = conv.parametrizations.weight.original0.detach().numpy().copy()
    np.testing.assert_allclose(g, norm_except_dim(weight, norm_dim), rtol=1e-14)
    np.testing.assert_allclose(conv.weight.detach().numpy(), weight, rtol=1e-13)  # g * v / ||v|| == v at first
    with ember.no_grad():
        conv.parametrizations.weight.original0.mul_(2.5)
    v = conv.parametrizations.weight.original1.detach().numpy()
    np.testing.assert_allclose(conv.weight.detach().numpy(), 2.5 * g * v / norm_except_dim(v, norm_dim), rtol=1e-13)
    check_module(conv, [RNG.standard_normal((2, 3, 3, 3))])


def test_weight_norm_repr_and_loading_a_legacy_state_dict():
    m = PP.weight_norm(nn.Linear(5, 3))
    assert repr(m) == ("ParametrizedLinear(\n  in_features=5, out_features=3, bias=True\n  (parametrizations): ModuleDict(\n"
                       "    (weight): ParametrizationList(\n      (0): _WeightNorm()\n    )\n  )\n)")
    with pytest.warns(FutureWarning, match="weight_norm` is deprecated in favor of"):
        legacy = nn.utils.weight_norm(nn.Linear(5, 3))
    with ember.no_grad():
        legacy.weight_g.mul_(3)
    m.load_state_dict(legacy.state_dict())
    x = ember.randn(2, 5)
    np.testing.assert_allclose(m(x).detach().numpy(), legacy(x).detach().numpy(), rtol=1e-6)
    P.remove_parametrizations(m, "weight")
    assert type(m) is nn.Linear and list(m.state_dict()) == ["bias", "weight"]


def test_weight_norm_trains_the_same_eagerly_and_compiled():
    def make():
        ember.manual_seed(1)
        net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        PP.weight_norm(net[0])
        PP.weight_norm(net[2], dim=None)
        return net, ember.optim.SGD(net.parameters(), lr=0.1)

    net, opt = make()
    ref, ref_opt = make()

    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        return loss

    compiled = ember.compile(step)
    for _ in range(5):
        x, y = ember.randn(5, 6), ember.randn(5, 3)
        loss = compiled(x, y)
        ref_opt.zero_grad()
        ref_loss = nn.functional.mse_loss(ref(x), y)
        ref_loss.backward()
        ref_opt.step()
        np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-5, atol=1e-5)
    assert compiled.report.compiled_calls >= 3
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- spectral_norm

def test_spectral_norm_starts_from_16_power_iterations_on_random_unit_vectors():
    """15 when _SpectralNorm is made, one more when register_parametrization checks its output
    (training mode), as in PyTorch."""
    m = nn.Linear(5, 4).double()
    weight = m.weight.detach().numpy().copy()
    ember.manual_seed(3)
    u0 = ember.empty(4, dtype=ember.float64).normal_(0, 1).numpy().copy()
    v0 = ember.empty(5, dtype=ember.float64).normal_(0, 1).numpy().copy()
    ember.manual_seed(3)
    PP.spectral_norm(m)
    u, v = normalized(u0), normalized(v0)
    for _ in range(16):
        u = normalized(weight @ v)
        v = normalized(weight.T @ u)
    assert list(m.state_dict()) == ["bias", "parametrizations.weight.original", "parametrizations.weight.0._u",
                                    "parametrizations.weight.0._v"]
    np.testing.assert_allclose(m.parametrizations.weight[0]._u.numpy(), u, rtol=1e-12)
    np.testing.assert_allclose(m.parametrizations.weight[0]._v.numpy(), v, rtol=1e-12)


@pytest.mark.parametrize("make,dim", [(lambda: nn.Linear(5, 4), 0), (lambda: nn.Conv2d(2, 3, 2), 0),
                                      (lambda: nn.ConvTranspose2d(2, 3, 2), 1)])
def test_spectral_norm_training_step_values_buffers_and_gradient(make, dim):
    m = PP.spectral_norm(make().double(), n_power_iterations=2)
    sn = m.parametrizations.weight[0]
    weight = m.parametrizations.weight.original.detach().numpy()
    W = as_matrix(weight, dim)
    u, v = sn._u.numpy().copy(), sn._v.numpy().copy()
    assert (u.shape, v.shape) == ((W.shape[0],), (W.shape[1],))
    for _ in range(2):
        u = normalized(W @ v)
        v = normalized(W.T @ u)
    sigma = u @ W @ v
    got = m.weight  # training mode: two power-iteration steps, then W / sigma
    np.testing.assert_allclose(got.detach().numpy(), weight / sigma, rtol=1e-12)
    np.testing.assert_allclose(sn._u.numpy(), u, rtol=1e-12)
    np.testing.assert_allclose(sn._v.numpy(), v, rtol=1e-12)
    C = RNG.standard_normal(weight.shape)  # d<W / (u.Wv), C>/dW with u, v held constant
    (got * ember.from_numpy(C)).sum().backward()
    expected = C / sigma - (weight * C).sum() / sigma ** 2 * np.moveaxis(
        np.outer(u, v).reshape(np.moveaxis(weight, dim, 0).shape), 0, dim)
    np.testing.assert_allclose(m.parametrizations.weight.original.grad.numpy(), expected, rtol=1e-10, atol=1e-12)
    m.eval()
    np.testing.assert_allclose(m.weight.detach().numpy(), weight / sigma, rtol=1e-12)
    np.testing.assert_array_equal(sn._u.numpy(), u)  # eval mode: no power iteration


def test_spectral_norm_eval_gradients_and_vectors_and_errors():
    m = PP.spectral_norm(nn.Conv1d(2, 3, 2)).eval()
    check_module(m, [RNG.standard_normal((2, 2, 5))])
    bias_normed = PP.spectral_norm(nn.Linear(3, 4).double(), "bias")
    bias = bias_normed.parametrizations.bias.original.detach().numpy()
    np.testing.assert_allclose(bias_normed.bias.detach().numpy(), bias / np.linalg.norm(bias), rtol=1e-14)
    assert list(bias_normed.state_dict()) == ["weight", "parametrizations.bias.original"]
    with pytest.raises(ValueError, match=re.escape("Module 'Linear(in_features=3, out_features=3, bias=True)' has no "
                                                   "parameter or buffer with name 'foo'")):
        PP.spectral_norm(nn.Linear(3, 3), "foo")
    with pytest.raises(IndexError, match=re.escape("Dimension out of range (expected to be in range of [-2, 1] but got 2)")):
        PP.spectral_norm(nn.Linear(3, 3), dim=2)
    with pytest.raises(ValueError, match="Expected n_power_iterations to be positive, but got n_power_iterations=0"):
        PP.spectral_norm(nn.Linear(3, 3), n_power_iterations=0)


def test_spectral_norm_compiled_training_updates_the_buffers_as_eagerly():
    def make():
        ember.manual_seed(1)
        return PP.spectral_norm(nn.Linear(4, 3))

    net, ref = make(), make()
    compiled = ember.compile(lambda x: net(x).sum())
    for _ in range(4):
        x = ember.randn(2, 4)
        np.testing.assert_allclose(compiled(x).item(), ref(x).sum().item(), rtol=1e-5)
    for key, value in values(ref).items():
        np.testing.assert_allclose(values(net)[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert compiled.report.compiled_calls >= 2


# ----------------------------------------------------------------------------- legacy hooks

def test_legacy_weight_norm_recomputes_the_weight_before_each_call():
    m = nn.Linear(4, 3).double()
    weight = m.weight.detach().numpy().copy()
    with pytest.warns(FutureWarning, match=re.escape("`ember.nn.utils.weight_norm` is deprecated in favor of "
                                                     "`ember.nn.utils.parametrizations.weight_norm`.")):
        nn.utils.weight_norm(m)
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == [("bias", (3,)), ("weight_g", (3, 1)),
                                                                         ("weight_v", (3, 4))]
    assert repr(m) == "Linear(in_features=4, out_features=3, bias=True)" and "weight" not in m._parameters
    np.testing.assert_allclose(m.weight.detach().numpy(), weight, rtol=1e-14)
    with ember.no_grad():
        m.weight_g.mul_(2)
    x = RNG.standard_normal((2, 4))
    out = m(ember.from_numpy(x))  # the pre-hook recomputes m.weight
    g, v = m.weight_g.detach().numpy(), m.weight_v.detach().numpy()
    np.testing.assert_allclose(out.detach().numpy(), x @ (g * v / norm_except_dim(v, 0)).T + m.bias.detach().numpy(),
                               rtol=1e-13)
    check_module(m, [x])
    with pytest.raises(RuntimeError, match="Cannot register two weight_norm hooks on the same parameter weight"), \
            pytest.warns(FutureWarning):
        nn.utils.weight_norm(m)
    nn.utils.remove_weight_norm(m)
    assert list(m.state_dict()) == ["bias", "weight"] and not m._forward_pre_hooks
    np.testing.assert_allclose(m.weight.detach().numpy(), 2 * weight, rtol=1e-13)
    with pytest.raises(ValueError, match=re.escape("weight_norm of 'weight' not found in Linear(in_features=4")):
        nn.utils.remove_weight_norm(m)
    with pytest.warns(FutureWarning):
        whole = nn.utils.weight_norm(nn.Linear(4, 3), dim=None)
    assert tuple(whole.weight_g.shape) == ()


def test_legacy_spectral_norm_one_step_per_training_call_from_random_unit_vectors():
    m = nn.Conv2d(2, 3, 2).double()
    weight = m.weight.detach().numpy().copy()
    ember.manual_seed(5)
    u0 = ember.empty(3, dtype=ember.float64).normal_(0, 1).numpy().copy()
    v0 = ember.empty(8, dtype=ember.float64).normal_(0, 1).numpy().copy()
    ember.manual_seed(5)
    nn.utils.spectral_norm(m, n_power_iterations=2)
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == [
        ("bias", (3,)), ("weight_orig", (3, 2, 2, 2)), ("weight_u", (3,)), ("weight_v", (8,))]
    np.testing.assert_allclose(m.weight_u.numpy(), normalized(u0), rtol=1e-14)
    np.testing.assert_allclose(m.weight_v.numpy(), normalized(v0), rtol=1e-14)
    W, u = as_matrix(weight, 0), normalized(u0)
    for _ in range(2):
        v = normalized(W.T @ u)
        u = normalized(W @ v)
    m(ember.ones(1, 2, 3, 3, dtype=ember.float64))
    np.testing.assert_allclose(m.weight.detach().numpy(), weight / (u @ W @ v), rtol=1e-12)
    np.testing.assert_allclose(m.weight_u.numpy(), u, rtol=1e-12)
    m.eval()
    check_module(m, [RNG.standard_normal((1, 2, 3, 3))])
    with pytest.raises(RuntimeError, match="Cannot register two spectral_norm hooks on the same parameter weight"):
        nn.utils.spectral_norm(m)
    nn.utils.remove_spectral_norm(m)
    assert list(m.state_dict()) == ["bias", "weight"] and not m._forward_pre_hooks
    np.testing.assert_allclose(m.weight.detach().numpy(), weight / (u @ W @ v), rtol=1e-12)
    with pytest.raises(ValueError, match=re.escape("spectral_norm of 'weight' not found in Conv2d(2, 3")):
        nn.utils.remove_spectral_norm(m)
    transposed = nn.utils.spectral_norm(nn.ConvTranspose2d(2, 3, 2))
    assert (tuple(transposed.weight_u.shape), tuple(transposed.weight_v.shape)) == ((3,), (8,))
