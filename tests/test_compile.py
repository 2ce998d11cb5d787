"""ember.compile with the interpreter backend: the signature cache, guards and segments,
recompile reasons, the eager fallback, modules, mutations and autograd through outputs."""
import copy
import warnings

import numpy as np

import ember
import zoo


def branchy(x):
    if x.sum() > 0:
        return x.relu()
    else:
        return -x


def test_branches_are_right_every_call_each_traced_once_then_cached():
    compiled = ember.compile(branchy, backend="interpret")
    positive, negative = ember.randn(5).abs() + 0.1, -ember.randn(5).abs() - 0.1
    for i in range(8):
        x = positive if i % 2 == 0 else negative
        np.testing.assert_array_equal(compiled(x).numpy(), branchy(x).numpy())
    report = compiled.report
    assert len(report.traces) == 2  # one per branch
    assert report.traces[1].segments == 1  # only the part after the guard was compiled anew
    assert report.compiled_calls == 6
    assert "was True, now False" in report.recompiles[0]
    assert "test_compile.py" in report.recompiles[0] and "if x.sum() > 0:" in report.recompiles[0]


def test_loop_trip_count_from_item_is_right_for_each_n():
    def repeat(x, n):
        for _ in range(int(n.item())):
            x = x * 2 + 1
        return x

    compiled = ember.compile(repeat)
    for n in [3, 1, 4, 1, 3, 0, 4]:
        x = ember.randn(3)
        np.testing.assert_allclose(compiled(x, ember.tensor(n)).numpy(), repeat(x, ember.tensor(n)).numpy(),
                                   rtol=1e-6)
    assert len(compiled.report.traces) == 4  # n in {3, 1, 4, 0}


def test_new_input_shape_recompiles_and_the_report_names_the_dim():
    compiled = ember.compile(lambda x: (x * 2).sum(dim=1))
    compiled(ember.randn(8, 3))
    compiled(ember.randn(16, 3))
    compiled(ember.randn(8, 3))  # (served by the program the second trace made dynamic in dim 0)
    assert len(compiled.report.traces) == 2
    assert compiled.report.recompiles == ["dim 0 of x: 8 -> 16 (dynamic from now on)"]
    assert "dim 0 of x: 8 -> 16" in str(compiled.report)
    static = ember.compile(lambda x: (x * 2).sum(dim=1), dynamic=False)
    for rows in (8, 16, 8):
        static(ember.randn(rows, 3))
    assert static.report.recompiles == ["dim 0 of x: 8 -> 16"]


def test_past_the_recompile_limit_it_runs_eagerly_with_one_warning():
    compiled = ember.compile(lambda x: x.sum() * 2, recompile_limit=3, dynamic=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(1, 9):
            x = ember.randn(n)
            np.testing.assert_allclose(compiled(x).numpy(), (x.sum() * 2).numpy(), rtol=1e-6)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "recompile_limit" in messages[0] and "dim 0 of x" in messages[0]
    assert compiled.report.fallback and len(compiled.report.traces) == 4


def test_guard_fallback_warning_names_the_guard_and_the_fix():
    def f(x):
        if x.max() > 0.5:
            return x
        return x * 0

    compiled = ember.compile(f, recompile_limit=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled(ember.ones(2))
        compiled(ember.zeros(2))  # second outcome: one recompile
        compiled(ember.full((2,), 0.7))  # served from the tree
        compiled(ember.ones(3))  # new shape: past the limit
    (message,) = [str(w.message) for w in caught]
    assert "dim 0 of x: 2 -> 3" in message


def test_python_float_argument_is_specialised_and_guarded():
    def scale(x, factor):
        return x * factor

    compiled = ember.compile(scale)
    x = ember.randn(4)
    np.testing.assert_allclose(compiled(x, 0.5).numpy(), (x * 0.5).numpy())
    np.testing.assert_allclose(compiled(x, 0.5).numpy(), (x * 0.5).numpy())
    np.testing.assert_allclose(compiled(x, 2.0).numpy(), (x * 2.0).numpy())
    assert len(compiled.report.traces) == 2
    assert "factor: 0.5 -> 2.0" in compiled.report.recompiles[0]


def test_a_compiled_module_stays_a_module_and_sees_updated_weights():
    net, (x,) = zoo.build("seed_net")
    compiled = ember.compile(net)
    assert isinstance(compiled, ember.nn.Module)
    assert len(list(compiled.parameters())) == 10
    np.testing.assert_allclose(compiled(x).detach().numpy(), net(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    with ember.no_grad():
        net.fc3.bias.add_(1.0)
    np.testing.assert_allclose(compiled(x).detach().numpy(), net(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert len(compiled.report.traces) == 1
    compiled.eval()
    compiled(x)
    assert "training flags" in compiled.report.recompiles[-1]


def test_batchnorm_running_stats_are_written_back_by_compiled_calls():
    block, (x,) = zoo.build("residual_train")
    reference = copy.deepcopy(block)
    compiled = ember.compile(block)
    for _ in range(4):
        out = compiled(x)
        expected = reference(x)
        np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    for (name, a), (_, b) in zip(block.named_buffers(), reference.named_buffers()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert compiled.report.compiled_calls >= 2


def test_outputs_of_a_compiled_call_support_eager_autograd():
    net, (x,) = zoo.build("mlp")
    reference = copy.deepcopy(net)
    compiled = ember.compile(net)
    compiled(x)  # first call traces
    out = compiled(x)  # second call runs the compiled program
    assert out.grad_fn.name() == "CompiledFunctionBackward0"  # the backward program from the autodiff pass
    out.sum().backward()
    reference(x).sum().backward()
    assert compiled.report.compiled_calls == 1
    for (name, p), (_, q) in zip(net.named_parameters(), reference.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_whole_training_step_compiles_and_matches_eager_for_20_steps():
    def make():
        ember.manual_seed(1)
        net = zoo.MLP((6, 8, 3))
        return net, ember.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

    net, opt = make()
    ref_net, ref_opt = make()

    def step(x, y):
        opt.zero_grad()
        loss = ember.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    compiled = ember.compile(step)
    ember.manual_seed(2)
    batches = [(ember.randn(10, 6), ember.randint(0, 3, (10,))) for _ in range(20)]
    for x, y in batches:
        loss = compiled(x, y)
        ref_opt.zero_grad()
        ref_loss = ember.nn.functional.cross_entropy(ref_net(x), y)
        ref_loss.backward()
        ref_opt.step()
        np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-4)
    for (name, p), (_, q) in zip(net.named_parameters(), ref_net.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert compiled.report.compiled_calls >= 15


def test_dropout_in_compiled_training_draws_fresh_masks_each_call():
    drop = ember.nn.Dropout(0.5).train()
    compiled = ember.compile(drop)
    x = ember.ones(64)
    masks = [compiled(x).numpy().copy() for _ in range(4)]
    assert compiled.report.compiled_calls == 3
    assert not all(np.array_equal(masks[0], m) for m in masks[1:])
    assert set(np.unique(np.concatenate(masks))) <= {0.0, 2.0}


def test_explain_returns_the_report():
    report = ember.explain(branchy, ember.ones(3))
    assert len(report.traces) == 1 and "bool()" in str(report)


def test_nested_outputs_and_python_values_are_rebuilt():
    def f(x):
        return {"double": x * 2, "pair": (x + 1, 3)}

    compiled = ember.compile(f)
    for _ in range(2):
        out = compiled(ember.ones(2))
        assert out["pair"][1] == 3
        np.testing.assert_array_equal(out["double"].numpy(), [2, 2])
