"""torch.* functions a transformer or convnet script reaches for: multinomial, cumprod, select,
diagonal, baddbmm/addbmm, top-level softmax, testing.assert_close, out=, compile(mode=), checked
against numpy, float64 finite differences, ember.compile and torch's documented messages."""
import warnings

import numpy as np
import pytest

import ember
from finite_differences import check_vjp

RNG = np.random.default_rng(0)


def test_multinomial_draws_follow_the_weights_with_and_without_replacement():
    ember.manual_seed(0)
    weights = ember.tensor([[1.0, 0.0, 3.0, 4.0], [0.0, 0.0, 1.0, 0.0]])
    draws = ember.multinomial(weights, 20000, replacement=True)
    assert draws.dtype == ember.int64 and draws.shape == (2, 20000)
    counts = np.bincount(draws[0].numpy(), minlength=4) / 20000
    np.testing.assert_allclose(counts, [0.125, 0.0, 0.375, 0.5], atol=0.015)
    assert (draws[1] == 2).all()
    firsts = np.array([ember.multinomial(weights[0], 3)[0].item() for _ in range(3000)])
    np.testing.assert_allclose(np.bincount(firsts, minlength=4) / 3000, [0.125, 0.0, 0.375, 0.5], atol=0.03)
    without = ember.multinomial(weights[0], 3)
    assert sorted(without.tolist()) == [0, 2, 3]  # every non-zero weight once
    compiled = ember.compile(lambda w: ember.multinomial(w, 2))
    for _ in range(3):
        assert sorted(compiled(weights[0]).tolist()) in ([0, 2], [0, 3], [2, 3])


def test_multinomial_refuses_what_torch_refuses():
    with pytest.raises(RuntimeError, match="cannot sample n_sample > prob_dist.size"):
        ember.multinomial(ember.tensor([1.0, 2.0]), 3)
    with pytest.raises(RuntimeError, match="probability tensor contains either `inf`, `nan` or element < 0"):
        ember.multinomial(ember.tensor([1.0, -2.0]), 1)
    with pytest.raises(RuntimeError, match="invalid multinomial distribution"):
        ember.multinomial(ember.tensor([0.0, 0.0]), 1, replacement=True)
    with pytest.raises(RuntimeError, match="prob_dist must be 1 or 2 dim"):
        ember.multinomial(ember.ones(2, 2, 2), 1)


def test_cumprod_matches_numpy_its_gradient_handles_zeros_and_it_compiles():
    x = RNG.standard_normal((3, 9))
    x[1, 4] = 0.0
    np.testing.assert_allclose(ember.cumprod(ember.from_numpy(x), 1).numpy(), np.cumprod(x, 1), rtol=1e-12)
    check_vjp(lambda t: ember.cumprod(t, 1), [x])
    check_vjp(lambda t: ember.cumprod(t, 0), [x])
    ints = ember.tensor([[1, 2, 3]])
    assert ember.cumprod(ints, 1).tolist() == [[1, 2, 6]] and ember.cumprod(ints, 1).dtype == ember.int64
    f32 = ember.from_numpy(x.astype(np.float32))
    compiled = ember.compile(lambda t: t.cumsum(0) + ember.cumprod(t, 1))
    np.testing.assert_allclose(compiled(f32).numpy(), (f32.cumsum(0) + ember.cumprod(f32, 1)).numpy(), rtol=1e-6)


def test_select_and_diagonal_are_views_as_in_torch():
    x = ember.arange(24.0).reshape(2, 3, 4)
    for offset in (-2, 0, 1, 3):
        for dims in ((0, 1), (1, 2), (2, 1)):
            np.testing.assert_array_equal(ember.diagonal(x, offset, *dims).numpy(),
                                          np.diagonal(x.numpy(), offset, *dims))
    square = ember.zeros(3, 3)
    ember.diagonal(square).fill_(1.0)
    ember.select(square, 0, -1).add_(5.0)
    assert square.tolist() == [[1, 0, 0], [0, 1, 0], [5, 5, 6]]
    with pytest.raises(IndexError, match=r"select\(\): index 3 out of range for tensor of size \[3, 3\] at dimension 0"):
        ember.select(square, 0, 3)
    with pytest.raises(NotImplementedError, match="adjacent dims of a contiguous tensor"):
        ember.diagonal(x, 0, 0, 2)
    check_vjp(lambda t: ember.diagonal(t, 1, 1, 2) * 2, [RNG.standard_normal((2, 3, 4))])


def test_baddbmm_and_addbmm_scale_and_ignore_the_input_when_beta_is_zero():
    a, b = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 4, 5))
    c = np.full((2, 3, 5), np.nan)
    got = ember.baddbmm(ember.from_numpy(c), ember.from_numpy(a), ember.from_numpy(b), beta=0, alpha=2)
    np.testing.assert_allclose(got.numpy(), 2 * a @ b, rtol=1e-12)
    c = RNG.standard_normal((3, 5))
    got = ember.addbmm(ember.from_numpy(c), ember.from_numpy(a), ember.from_numpy(b), beta=0.5)
    np.testing.assert_allclose(got.numpy(), 0.5 * c + (a @ b).sum(0), rtol=1e-12)
    out = ember.empty(0, dtype=ember.float64)
    assert ember.baddbmm(ember.from_numpy(c), ember.from_numpy(a), ember.from_numpy(b), out=out) is out
    np.testing.assert_allclose(out.numpy(), c + a @ b, rtol=1e-12)
    check_vjp(lambda x, y, z: ember.baddbmm(x, y, z, beta=0.5, alpha=1.5), [c, a, b])
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        ember.baddbmm(ember.zeros(2, 3, 5), ember.randn(2, 3, 4), ember.randn(2, 4, 5),
                      out=ember.zeros(2, 3, 5, dtype=ember.int64))


def test_out_arguments_write_into_the_given_tensor_as_torch_does():
    x = ember.randn(3, 4)
    out = ember.empty(3, 4)
    assert ember.add(x, 1, out=out) is out and ember.equal(out, x + 1)
    values, indices = ember.empty(3), ember.empty(3, dtype=ember.int64)
    result = ember.max(x, 1, out=(values, indices))
    assert result.values is values and ember.equal(indices, x.argmax(1))
    assert ember.cat([x, x], out=ember.empty(0)).shape == (6, 4)  # an empty out= takes the result's shape
    view = ember.zeros(2, 3, 4)[1]
    ember.mul(x, 2, out=view)
    assert ember.equal(view, x * 2)
    ember.add(x, 1, out=x)  # out= may be an input: computed first, then written
    assert ember.add(ember.tensor([1, 2]), 1, out=ember.empty(2)).dtype == ember.float32  # int -> float casts
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        ember.add(x, 1, out=ember.empty(3, 4, dtype=ember.int64))
    with pytest.raises(RuntimeError, match="functions with out=... arguments don't support automatic differentiation"):
        ember.add(x, 1, out=ember.empty(3, 4, requires_grad=True))
    with pytest.warns(UserWarning, match=r"An output with one or more elements was resized since it had shape \[2, 2\]"):
        resized = ember.add(x, 1, out=ember.empty(2, 2))
    assert resized.shape == (3, 4)
    with pytest.raises(RuntimeError, match="a view cannot be resized"):
        ember.add(x, 1, out=ember.zeros(4, 4)[:2])
    with pytest.raises(RuntimeError, match=r"exp\(\): functions with out=... arguments don't support automatic"):
        ember.exp(ember.randn(3, requires_grad=True), out=ember.empty(3))
    assert ember.sum(ember.ones(3), out=ember.empty(0)).item() == 3.0
    with pytest.raises(TypeError, match=r"max\(\): argument 'out' must be tuple of 2 Tensors"):
        ember.max(x, 1, out=values)


def test_top_level_softmax_and_log_softmax():
    x = ember.randn(3, 4)
    np.testing.assert_allclose(ember.softmax(x, 1).numpy(), ember.nn.functional.softmax(x, 1).numpy())
    np.testing.assert_allclose(ember.log_softmax(x, dim=0).exp().sum(0).numpy(), np.ones(4), rtol=1e-6)


def test_assert_close_tolerances_and_messages_follow_torch():
    x = ember.tensor([1.0, 2.0, 3.0])
    ember.testing.assert_close(x, x + 1e-6)
    ember.testing.assert_close({"a": [x, 1]}, {"a": [x.clone(), 1]})
    with pytest.raises(AssertionError, match=r"(?s)Tensor-likes are not close!.*Mismatched elements: 1 / 3 \(33.3%\)"
                                             r".*Greatest absolute difference: 0.5 at index \(1,\)"):
        ember.testing.assert_close(x, ember.tensor([1.0, 2.5, 3.0]))
    with pytest.raises(AssertionError, match=r"The values for attribute 'dtype' do not match"):
        ember.testing.assert_close(x, x.double())
    with pytest.raises(AssertionError, match=r"The values for attribute 'shape' do not match"):
        ember.testing.assert_close(x, x[:2])
    with pytest.raises(AssertionError, match=r"The failure occurred for item \['a'\]\[0\]"):
        ember.testing.assert_close({"a": [x]}, {"a": [x + 1]})
    ember.testing.assert_close(x, x.double(), check_dtype=False)
    ember.testing.assert_close(ember.tensor([float("nan")]), ember.tensor([float("nan")]), equal_nan=True)
    with pytest.raises(ValueError, match="Both 'rtol' and 'atol' must be either specified or omitted"):
        ember.testing.assert_close(x, x, rtol=1e-3)


def test_compile_modes_are_torchs_and_say_when_they_change_nothing():
    x = ember.randn(3)
    with pytest.warns(UserWarning, match=r"mode='max-autotune'\) compiles as mode='default'"):
        compiled = ember.compile(lambda t: t * 2, mode="max-autotune")
    np.testing.assert_allclose(compiled(x).numpy(), (x * 2).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ember.compile(lambda t: t * 2, mode="default")
    with pytest.raises(RuntimeError, match="Unrecognized mode=fastest, should be one of: default, reduce-overhead"):
        ember.compile(lambda t: t, mode="fastest")


def test_compile_fullgraph_refuses_a_graph_break_with_its_line():
    def branchy(t):
        if t.sum() > 0:  # Python reads a tensor's value: a guard, which splits the graph
            return t * 2
        return t

    with pytest.raises(RuntimeError, match=r"fullgraph=True\): the function breaks the graph at guard at "
                                           r"test_torch_surface.py:\d+ \(if t.sum\(\) > 0:"):
        ember.compile(branchy, fullgraph=True)(ember.ones(3))
    assert ember.compile(branchy)(ember.ones(3)).tolist() == [2.0, 2.0, 2.0]  # (without it, guards split)

    def writes_history(t):
        t.data.mul_(2)  # a write autograd does not see, into a tensor with history: runs eagerly
        return t.sum()

    with pytest.raises(RuntimeError, match="fullgraph=True\\): the call cannot be compiled as one graph"):
        ember.compile(writes_history, fullgraph=True)(ember.ones(3, requires_grad=True) * 1)

    @ember.compile(fullgraph=True)
    def straight(t):
        return t * 2 + 1

    for _ in range(3):
        assert straight(ember.ones(2)).tolist() == [3.0, 3.0]
    assert straight.report.compiled_calls == 2


def test_compile_options_say_they_change_nothing_and_dynamic_is_checked(monkeypatch):
    from ember.frontend import compile_modes
    monkeypatch.setattr(compile_modes, "_WARNED", set())
    with pytest.raises(TypeError, match="takes None, True or False"):
        ember.compile(lambda t: t, dynamic="yes")
    with pytest.warns(UserWarning, match="no inductor options"):
        ember.compile(lambda t: t, options={"trace.enabled": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ember.compile(lambda t: t, dynamic=False)
        ember.compile(lambda t: t, dynamic=True)  # (once per process)


def test_set_num_threads_sets_the_threads_of_compiled_programs_from_their_next_call(monkeypatch):
    import gc
    from ember import config
    from ember.runtime import thread_runtime
    from ember.runtime.cpu_program import THREADS, CpuProgram
    monkeypatch.setattr(thread_runtime, "CHOSEN_THREADS", thread_runtime.CHOSEN_THREADS)
    monkeypatch.setattr(config, "NUM_THREADS", config.NUM_THREADS)
    saved = list(thread_runtime.CHOSEN_THREADS)
    blas_before = _blas_threads()
    try:
        x = ember.randn(64, 64)
        compiled = ember.compile(lambda a: (a @ a).relu())
        compiled(x)
        programs = [p for p in gc.get_objects() if isinstance(p, CpuProgram)]
        for threads in (1, 3):
            ember.set_num_threads(threads)
            assert ember.get_num_threads() == threads and config.NUM_THREADS == threads
            before = {id(p): p.calls for p in programs}
            np.testing.assert_allclose(compiled(x).numpy(), (x @ x).relu().numpy(), rtol=1e-5)
            ran = [p for p in programs if p.calls > before[id(p)]]
            assert ran and all(p._table[THREADS] == threads for p in ran)
            # and eager mode's matmuls (numpy's BLAS), as torch.set_num_threads limits PyTorch's
            assert set(_blas_threads()) <= {threads}
        with pytest.raises(RuntimeError, match="set_num_threads expects a positive integer"):
            ember.set_num_threads(0)
        with pytest.raises(RuntimeError, match="set_num_threads expects an int, but got float"):
            ember.set_num_threads(1.5)
    finally:
        thread_runtime.CHOSEN_THREADS[:] = saved
        from threadpoolctl import threadpool_limits
        if blas_before:
            threadpool_limits(limits=max(blas_before), user_api="blas")


def _blas_threads():
    from threadpoolctl import threadpool_info
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_checkpoint_recomputes_in_backward_with_the_same_dropout_masks_and_gradients():
    from ember.utils.checkpoint import checkpoint, checkpoint_sequential
    ember.manual_seed(0)
    block = ember.nn.Sequential(ember.nn.Linear(4, 8), ember.nn.GELU(), ember.nn.Dropout(0.3), ember.nn.Linear(8, 4))
    x = ember.randn(5, 4, requires_grad=True)
    results = []
    for wrapped in (False, True):
        x.grad = None
        block.zero_grad()
        ember.manual_seed(1)
        y = checkpoint(block, x, use_reentrant=False) if wrapped else block(x)
        assert y.requires_grad
        y.pow(2).sum().backward()
        results.append((y.detach().numpy(), x.grad.numpy().copy(), block[0].weight.grad.numpy().copy()))
    for plain, checkpointed in zip(*results):
        np.testing.assert_array_equal(plain, checkpointed)
    block.zero_grad()
    constant = ember.randn(5, 4)  # no input needs a gradient: the parameters still get theirs
    checkpoint(block.eval(), constant, use_reentrant=False).sum().backward()
    assert block[3].weight.grad is not None and block[3].weight.grad.abs().sum().item() > 0
    with pytest.warns(UserWarning, match="the use_reentrant parameter should be passed explicitly"):
        checkpoint(block, x)
    layers = ember.nn.Sequential(*[ember.nn.Linear(4, 4) for _ in range(4)])
    np.testing.assert_allclose(checkpoint_sequential(layers, 2, x, use_reentrant=False).detach().numpy(),
                               layers(x).detach().numpy(), rtol=1e-6)


def test_full_backward_hooks_see_and_replace_gradients_as_torchs_do():
    linear = ember.nn.Linear(3, 2)
    with ember.no_grad():
        linear.weight.copy_(ember.arange(6.0).reshape(2, 3) / 10)
    seen = []

    def pre_hook(module, grad_output):
        seen.append(("pre", grad_output[0].numpy().copy()))
        return (grad_output[0] * 3,)

    def hook(module, grad_input, grad_output):
        seen.append(("full", grad_input[0].numpy().copy(), grad_output[0].numpy().copy()))
        return (grad_input[0] * 2,)
    linear.register_full_backward_pre_hook(pre_hook)
    handle = linear.register_full_backward_hook(hook)
    x = ember.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], requires_grad=True)
    linear(x).sum().backward()
    weight = linear.weight.detach().numpy()
    assert seen[0][0] == "pre" and (seen[0][1] == 1).all()
    np.testing.assert_allclose(seen[1][1], 3 * np.ones((2, 2)) @ weight, rtol=1e-6)  # after the pre hook's x3
    np.testing.assert_allclose(x.grad.numpy(), 2 * 3 * np.ones((2, 2)) @ weight, rtol=1e-6)
    np.testing.assert_allclose(linear.weight.grad.numpy(), 3 * np.ones((2, 2)).T @ x.detach().numpy(), rtol=1e-6)
    handle.remove()
    seen.clear()
    linear(x).sum().backward()
    assert [s[0] for s in seen] == ["pre"]
    frozen = ember.nn.Linear(3, 2)
    calls = []
    frozen.register_full_backward_hook(lambda m, gi, go: calls.append((gi, tuple(go[0].shape))))
    with pytest.warns(UserWarning, match="Full backward hook is firing when gradients are computed with respect"):
        out = frozen(ember.ones(1, 3))
    out.sum().backward()
    assert calls == [((None,), (1, 2))]
    with pytest.raises(RuntimeError, match="ember.compile cannot run a module's full backward hooks"):
        ember.compile(lambda t: linear(t).sum())(x)


def reference_running_extreme(x, maximum=True):
    values, indices = np.empty_like(x), np.empty(x.shape, np.int64)
    best, where_best = None, 0
    for k, v in enumerate(x):
        if best is None or np.isnan(v) or (not np.isnan(best) and (v >= best if maximum else v <= best)):
            best, where_best = v, k
        values[k], indices[k] = best, where_best
    return values, indices


@pytest.mark.parametrize("op", ["cummax", "cummin"])
def test_cummax_and_cummin_follow_torch_on_ties_and_nan_and_differentiate(op):
    x = RNG.integers(0, 4, (3, 9)).astype(np.float64)
    x[1, 5] = x[1, 7] = x[2, 0] = np.nan  # (a later NaN takes the index, as in torch)
    values, indices = getattr(ember, op)(ember.from_numpy(x), 1)
    for row in range(3):
        want_v, want_i = reference_running_extreme(x[row], op == "cummax")
        np.testing.assert_array_equal(values[row].numpy(), want_v)
        np.testing.assert_array_equal(indices[row].numpy(), want_i)
    smooth = RNG.standard_normal((4, 6))
    check_vjp(lambda t: getattr(ember, op)(t, 0).values, [smooth])
    compiled = ember.compile(lambda t: getattr(ember, op)(t, 1).values * 2)
    f32 = ember.from_numpy(smooth.astype(np.float32))
    np.testing.assert_array_equal(compiled(f32).numpy(), (getattr(ember, op)(f32, 1).values * 2).numpy())


def test_top_level_forms_of_functional_ops_match_nn_functional():
    F = ember.nn.functional
    x = ember.randn(2, 3, 8, 8)
    w = ember.randn(4, 3, 3, 3)
    np.testing.assert_allclose(ember.conv2d(x, w, None, 1, 1).numpy(), F.conv2d(x, w, padding=1).numpy())
    np.testing.assert_allclose(ember.layer_norm(x, [8]).numpy(), F.layer_norm(x, [8]).numpy())
    np.testing.assert_allclose(ember.group_norm(x, 3).numpy(), F.group_norm(x, 3).numpy())
    np.testing.assert_allclose(ember.max_pool2d(x, 2).numpy(), F.max_pool2d(x, 2).numpy())
    np.testing.assert_allclose(ember.pixel_shuffle(ember.randn(1, 4, 2, 2), 2).shape, (1, 1, 4, 4))
    np.testing.assert_allclose(ember.selu(x).numpy(), F.selu(x).numpy())
    np.testing.assert_allclose(ember.celu(x, 0.5).numpy(), F.celu(x, 0.5).numpy())
    np.testing.assert_allclose(ember.threshold(x, 0.1, -1.0).numpy(), F.threshold(x, 0.1, -1.0).numpy())
    np.testing.assert_allclose(ember.prelu(x, ember.tensor([0.25])).numpy(),
                               np.where(x.numpy() > 0, x.numpy(), 0.25 * x.numpy()), rtol=1e-6)



def test_attention_rows_that_may_attend_to_nothing_give_zeros_and_finite_gradients():
    q = ember.randn(1, 3, 4, requires_grad=True)
    allowed = ember.tensor([[True, False, True], [False, False, False], [True, True, True]])
    out = ember.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=allowed)
    assert (out[0, 1] == 0).all()
    out.pow(2).sum().backward()
    assert np.isfinite(q.grad.numpy()).all()
    kept = ember.nn.functional.scaled_dot_product_attention(q[:, [0, 2]], q, q, attn_mask=allowed[[0, 2]])
    np.testing.assert_allclose(out[0, [0, 2]].detach().numpy(), kept[0].detach().numpy(), rtol=1e-6)


def test_cumulative_ops_check_their_dim():
    with pytest.raises(IndexError, match=r"cumprod: Dimension out of range \(expected to be in range of \[-2, 1\]"):
        ember.cumprod(ember.ones(2, 3), 2)
    with pytest.raises(IndexError, match="cummax"):
        ember.cummax(ember.ones(2, 3), -3)
    assert ember.cumsum(ember.tensor(2.0), 0).item() == 2.0


def test_a_custom_function_with_two_outputs_runs_backward_once_with_both_gradients():
    calls = []

    class ProductAndSum(ember.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b, a + b

        @staticmethod
        def backward(ctx, grad_product, grad_sum):
            calls.append((grad_product, grad_sum))
            a, b = ctx.saved_tensors
            return grad_product * b + grad_sum, grad_product * a + grad_sum
    a = ember.tensor([1.0, 2.0], requires_grad=True)
    b = ember.tensor([3.0, 4.0], requires_grad=True)
    product, total = ProductAndSum.apply(a, b)
    (product * 2 + total).sum().backward()
    assert len(calls) == 1 and calls[0][0].tolist() == [2.0, 2.0] and calls[0][1].tolist() == [1.0, 1.0]
    assert a.grad.tolist() == [7.0, 9.0] and b.grad.tolist() == [3.0, 5.0]


def test_a_backward_hook_on_a_module_of_two_inputs_fires_once_with_both_gradients():
    class Pair(ember.nn.Module):
        def forward(self, a, b):
            return a * b, a + b
    seen = []
    pair = Pair()
    pair.register_full_backward_hook(lambda m, grad_input, grad_output: seen.append(
        ([g.tolist() for g in grad_input], [None if g is None else g.tolist() for g in grad_output])))
    a = ember.tensor([1.0, 2.0], requires_grad=True)
    b = ember.tensor([3.0, 4.0], requires_grad=True)
    product, _ = pair(a, b)
    (product * 2).sum().backward()
    assert seen == [([[6.0, 8.0], [2.0, 4.0]], [[2.0, 2.0], None])]


def test_more_tensor_methods_and_scalar_tolerances():
    x = ember.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    assert x.select(1, 0).tolist() == [1.0, 4.0, 7.0] and x.diagonal(1).tolist() == [2.0, 6.0]
    assert x.cumprod(1)[0].tolist() == [1.0, 2.0, 6.0] and x.cummax(0).indices[2].tolist() == [2, 2, 2]
    np.testing.assert_allclose(x.addmm(x, x, beta=0.5).numpy(), 0.5 * x.numpy() + x.numpy() @ x.numpy())
    assert x.multinomial(2).shape == (3, 2)
    lower = x.clone()
    assert lower.tril_() is lower and lower.tolist() == [[1, 0, 0], [4, 5, 0], [7, 8, 9]]
    ember.testing.assert_close(1.0, 1.0 + 1e-7)  # Python floats: float64 tolerances
    with pytest.raises(AssertionError, match="Scalars are not close!"):
        ember.testing.assert_close(1.0, 1.001)
    inp = ember.full((3, 5), float("nan"), requires_grad=True)
    out = ember.addbmm(inp, ember.randn(2, 3, 4), ember.randn(2, 4, 5), beta=0)
    out.sum().backward()
    assert not out.isnan().any().item() and inp.grad is not None and (inp.grad == 0).all()


IN_PLACE_UNARY = ["absolute_", "cos_", "sin_", "tan_", "erf_", "expm1_", "log1p_", "log2_", "log10_", "rsqrt_",
                  "frac_", "trunc_", "sign_", "square_", "negative_", "nan_to_num_"]


@pytest.mark.parametrize("name", IN_PLACE_UNARY)
def test_in_place_methods_write_what_the_function_returns_and_differentiate(name):
    values = np.array([0.3, 1.7, 2.2, 0.9])
    x = ember.from_numpy(values.copy())
    expected = getattr(x.clone(), name[:-1])().numpy()
    assert getattr(x, name)() is x
    np.testing.assert_array_equal(x.numpy(), expected)
    leaf = ember.from_numpy(values.copy()).requires_grad_()
    getattr(leaf * 1, name)().sum().backward()
    reference = ember.from_numpy(values.copy()).requires_grad_()
    getattr(reference, name[:-1])().sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), reference.grad.numpy(), rtol=1e-12)


def test_in_place_comparisons_and_top_level_in_place_functions():
    x = ember.tensor([1.0, 2.0, 3.0])
    assert x.ge_(2.0) is x and x.tolist() == [0.0, 1.0, 1.0] and x.dtype == ember.float32
    y = ember.tensor([4.0, 9.0])
    assert ember.sqrt_(y) is y and y.tolist() == [2.0, 3.0]
    z = ember.tensor([-1.0, 2.0])
    assert ember.clamp_(z, min=0.0) is z and z.tolist() == [0.0, 2.0]
    a = ember.randn(2, 3)
    expected = (2 * a + a @ ember.eye(3)).numpy()
    a.addmm_(a, ember.eye(3), beta=2)
    np.testing.assert_allclose(a.numpy(), expected, rtol=1e-6)


def test_grad_of_a_multi_output_functions_output_and_second_backwards_follow_torch():
    class Twice(ember.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, grad_a, grad_b):
            return 2 * grad_a + 3 * grad_b

    class Saving(Twice):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 2, x * 3

    class Reading(Saving):
        @staticmethod
        def backward(ctx, grad_a, grad_b):
            (x,) = ctx.saved_tensors
            return 2 * grad_a + 3 * grad_b
    x = ember.ones(3, requires_grad=True)
    a, b = Twice.apply(x)
    grad_a, grad_x = ember.autograd.grad(a.sum() + b.sum(), [a, x])
    assert grad_a.tolist() == [1.0] * 3 and grad_x.tolist() == [5.0] * 3
    a, b = Twice.apply(x)
    a.sum().backward()
    b.sum().backward()  # nothing saved: torch allows it
    a, b = Saving.apply(x)
    a.sum().backward()
    b.sum().backward()  # saved, but the backward never reads ctx.saved_tensors: torch allows it too
    a, b = Reading.apply(x)
    a.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        b.sum().backward()


def test_backward_hooks_hand_zeros_for_inputs_that_get_no_gradient():
    class FirstOnly(ember.nn.Module):
        def forward(self, x, y, z):
            return x * 2
    seen = []
    module = FirstOnly()
    module.register_full_backward_hook(lambda m, grad_input, grad_output: seen.append(
        [g.tolist() for g in grad_input]))
    x, y, z = ember.ones(2, requires_grad=True), ember.ones(2), ember.ones(2, requires_grad=True)
    module(x, y, z).sum().backward()
    assert seen == [[[2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]] and z.grad.tolist() == [0.0, 0.0]


def test_sign_of_nan_and_negative_zero_is_zero_as_in_torch_eagerly_and_compiled():
    x = ember.tensor([float("nan"), -0.0, 2.0, -3.0])
    assert ember.sign(x).tolist() == [0.0, 0.0, 1.0, -1.0]
    assert ember.compile(lambda t: ember.sign(t) * 1)(x).tolist() == [0.0, 0.0, 1.0, -1.0]


def test_pools_take_a_numpy_integer_stride_and_an_empty_one():
    F = ember.nn.functional
    x = ember.randn(1, 2, 8, 8)
    assert F.max_pool2d(x, 2, stride=np.int64(2)).shape == (1, 2, 4, 4)
    assert F.avg_pool2d(x, 2, stride=()).shape == (1, 2, 4, 4)
    assert F.max_pool1d(ember.randn(1, 2, 8), 2, stride=np.int64(2)).shape == (1, 2, 4)
