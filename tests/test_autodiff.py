"""The autodiff pass: gradients built on the IR with the same VJP rules equal eager
autograd on the zoo; backward inside traced code makes a whole training step one graph;
forward/backward splitting gives programs whose results equal eager autograd."""
import copy

import numpy as np
import pytest

import ember
from ember.ir import run_graph
from ember.passes.autodiff import gradients, split_forward_backward
import zoo


def _loss_fn(fn, weights):
    def loss(*inputs):
        out = fn(*inputs)
        first = out[0] if isinstance(out, tuple) else out
        return (first * weights).sum()
    return loss


@pytest.mark.parametrize("name", [n for n in zoo.NAMES if n != "inplace_slicing"] + ["inplace_slicing"])
def test_autodiff_pass_equals_eager_autograd_on_the_zoo(name):
    fn, inputs = zoo.build(name)
    float_inputs = [t.clone().requires_grad_(True) if t.is_floating_point() else t for t in inputs]
    reference = copy.deepcopy(fn) if isinstance(fn, ember.nn.Module) else fn
    is_module = isinstance(fn, ember.nn.Module)
    state = dict(ember.frontend.tracer.module_state(fn)) if is_module else {}
    with ember.no_grad():
        out = reference(*[t.detach() for t in inputs])
    first = out[0] if isinstance(out, tuple) else out
    weights = ember.randn(*first.shape)

    # eager reference gradients
    ref_inputs = [t.detach().clone().requires_grad_(True) if t.is_floating_point() else t for t in inputs]
    _loss_fn(reference, weights)(*ref_inputs).backward()
    ref_state = dict(ember.frontend.tracer.module_state(reference)) if is_module else {}

    # the pass on the traced graph, evaluated by the interpreter
    params_before = {f"fn.{k}": v._data.copy() for k, v in state.items()}  # closed-over: named fn.<param>
    params_before["weights"] = weights._data
    graph = ember.trace(_loss_fn(fn, weights), *float_inputs)
    graph.outputs = graph.outputs[:1]
    wrt = [i for i in graph.inputs if graph.spec(i).dtype.is_floating_point and not graph.node(i).attrs.get("rng")]
    wrt += [graph.params[f"fn.{k}"] for k, t in state.items() if f"fn.{k}" in graph.params and t.requires_grad]
    before = len(graph)
    grads = gradients(graph, graph.outputs, wrt)
    graph.verify()
    assert len(graph) > before
    env = run_graph(graph, [t._data for t in inputs], params_before)
    by_node = {graph.inputs[i]: t for i, t in enumerate(ref_inputs)}
    by_node.update({graph.params[f"fn.{k}"]: t for k, t in ref_state.items() if f"fn.{k}" in graph.params})
    checked = 0
    for w, g in grads.items():
        expected = by_node[w].grad
        if expected is None:
            assert g is None or np.allclose(env[g], 0)
            continue
        np.testing.assert_allclose(env[g], expected.numpy(), rtol=2e-4, atol=2e-5, err_msg=graph.node(w).name)
        checked += 1
    assert checked >= 1


def test_fan_out_is_accumulated_and_unneeded_gradients_are_pruned():
    def f(x, y):
        return (x * x + x * 3).sum() + (y * 0).sum()

    graph = ember.trace(f, ember.randn(4), ember.randn(4))
    x_node = graph.inputs[0]
    grads = gradients(graph, graph.outputs, [x_node])
    x = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    env = run_graph(graph, [x, np.zeros(4, np.float32)])
    np.testing.assert_allclose(env[grads[x_node]], 2 * x + 3, rtol=1e-6)
    # nothing computes a gradient for y: no op reads y's cotangent chain
    names = [n.name for n in graph.nodes() if n.name.startswith("grad.")]
    assert len(names) < 20


def _train_step_pair(model_name):
    def make():
        ember.manual_seed(3)
        net = zoo.SeedNet() if model_name == "seed_net" else zoo.MLP((12, 16, 4))
        return net, ember.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    return make(), make()


@pytest.mark.parametrize("model_name", ["seed_net", "mlp"])
def test_20_traced_training_steps_through_the_interpreter_equal_20_eager_steps(model_name):
    (net, opt), (ref_net, ref_opt) = _train_step_pair(model_name)
    crit = ember.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = crit(net(x), y)
        loss.backward()
        opt.step()
        return loss

    compiled = ember.compile(step, backend="interpret")
    ember.manual_seed(4)
    shape = (4, 3, 32, 32) if model_name == "seed_net" else (8, 12)
    classes = 10 if model_name == "seed_net" else 4
    for _ in range(20):
        x, y = ember.randn(*shape), ember.randint(0, classes, (shape[0],))
        compiled(x, y)
        ref_opt.zero_grad()
        crit(ref_net(x), y).backward()
        ref_opt.step()
    for (name, p), (_, q) in zip(net.named_parameters(), ref_net.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=2e-4, atol=2e-5, err_msg=name)
    # the step is ONE graph: no guards, one segment; mutations are params and momentum buffers
    (trace,) = [t for t in compiled.report.traces if t.reason != "first call"] or compiled.report.traces[:1]
    assert all(t.guards == 0 for t in compiled.report.traces)
    # (the first call's tree, which makes the momentum buffers, stays under its signature, never compiled)
    (tree,) = [t for t in compiled._cache.values() if t.root.runner is not None]
    assert tree.root.guard is None and not tree.root.children
    targets = {m.target for m in tree.root.mutations}
    assert len([t for t in targets if "momentum_buffer" in t]) == len(list(net.parameters()))
    assert {f"net.{n}" for n, _ in net.named_parameters()} <= targets


def test_split_forward_backward_gives_programs_equal_to_eager_autograd():
    net, (x,) = zoo.build("mlp")
    graph = ember.trace(net, x)
    wrt = list(graph.params.values())
    fb = split_forward_backward(graph, wrt)
    fb.forward.verify()
    fb.backward.verify()
    params = {k: v._data for k, v in net.named_parameters()}
    fwd = run_graph(fb.forward, [x._data], params)
    seed = np.ones(fwd[graph.outputs[0]].shape, np.float32)
    bwd_inputs = [fwd[s] for s in fb.saved] + [seed]
    bwd = run_graph(fb.backward, bwd_inputs, params)
    net(x).sum().backward()
    by_node = {graph.params[k]: p for k, p in net.named_parameters()}
    for w, out in zip(fb.wrt, fb.grad_outputs):
        np.testing.assert_allclose(bwd[out], by_node[w].grad.numpy(), rtol=1e-5, atol=1e-6)
    assert fb.saved, "the backward reads saved activations"
    assert all(fb.forward.node(s).op != "param" for s in fb.saved)
