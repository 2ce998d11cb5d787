"""A second backward through a history an earlier backward (without retain_graph) freed: as in
PyTorch, it raises "Trying to backward through the graph a second time" only where a node's
backward reads a value it saved (frontend/autograd.py: Node.unpack_inputs' FreedValue stand-ins);
a slice, a view, a sum or an add saves none and runs again. The outcomes below are PyTorch
2.13's, checked against it."""
import pytest

import ember
import ember.nn.functional as F

TWICE = "backward through the graph a second time"

# (setup making `v` from the leaf `w`, how to reduce v to a scalar, PyTorch's grad of w after two
# backwards, or None where PyTorch raises at the second)
CASES = {
    "slice": ("v = w[:2]", "(v * 2).sum()", [4.0, 4.0, 0.0]),
    "a product then a slice": ("v = (w * 1)[:2]", "v.sum()", None),  # (the product saved its number)
    "reshape": ("v = w.reshape(3, 1)", "(v * 2).sum()", [4.0, 4.0, 4.0]),
    "add a number": ("v = w + 1", "v.sum()", [2.0, 2.0, 2.0]),
    "sum": ("v = w.sum()", "v", [2.0, 2.0, 2.0]),
    "mean": ("v = w.mean()", "v", [2 / 3] * 3),
    "negate then slice": ("v = (-w)[1:]", "v.sum()", [0.0, -2.0, -2.0]),
    "to float64": ("v = w.double()", "v.sum()", [2.0, 2.0, 2.0]),
    "expand": ("v = w.expand(2, 3)", "v.sum()", [4.0, 4.0, 4.0]),
    "cat": ("v = ember.cat([w, w])", "v.sum()", [4.0, 4.0, 4.0]),
    "select": ("v = w[1]", "v", [0.0, 2.0, 0.0]),
    "clone": ("v = w.clone()", "v.sum()", [2.0, 2.0, 2.0]),
    "unsqueeze": ("v = w.unsqueeze(0)", "v.sum()", [2.0, 2.0, 2.0]),
    "times a number": ("v = w * 2", "v.sum()", None),
    "divided by a number": ("v = w / 2", "v.sum()", None),
    "times a tensor": ("v = w * ember.ones(3, requires_grad=True)", "v.sum()", None),
    "square": ("v = w ** 2", "v.sum()", None),
    "exp": ("v = w.exp()", "v.sum()", None),
    "relu": ("v = w.relu()", "v.sum()", None),
    "sigmoid": ("v = w.sigmoid()", "v.sum()", None),
    "softmax": ("v = F.softmax(w, 0)", "(v * ember.arange(3.0)).sum()", None),
    "index by a tensor": ("v = w[ember.tensor([0, 2])]", "v.sum()", None),
    "linear": ("v = F.linear(ember.ones(2, 3), w.reshape(1, 3))", "v.sum()", None),
}


class Saves(ember.autograd.Function):  # (a custom Function whose backward reads what it saved)
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 2


def _run(setup, loss, twice):
    w = ember.ones(3, requires_grad=True)
    namespace = {"ember": ember, "F": F, "w": w}
    exec(setup, namespace)
    for _ in range(2 if twice else 1):
        eval(loss, namespace).backward()
    return w.grad.tolist()


@pytest.mark.parametrize("name", list(CASES))
def test_a_second_backward_raises_only_where_a_node_reads_what_it_saved(name):
    setup, loss, expected = CASES[name]
    if expected is None:
        with pytest.raises(RuntimeError, match=TWICE):
            _run(setup, loss, twice=True)
    else:
        assert _run(setup, loss, twice=True) == pytest.approx(expected)


def test_a_view_made_outside_a_compiled_function_is_backwarded_on_every_call():
    w = ember.ones(3, requires_grad=True)
    v = w[:2]  # (SliceBackward0, made once, freed by the first call's backward)

    def step(scale):
        loss = (v * scale).sum()
        loss.backward()
        return loss

    compiled = ember.compile(step)
    for call in range(3):
        assert compiled(ember.tensor(2.0)).item() == 4.0
        assert w.grad.tolist() == [2.0 * (call + 1)] * 2 + [0.0]


def test_compiled_and_eager_agree_on_a_second_backward_inside_the_function():
    def runs_again(w):
        v = w[:2]
        v.sum().backward()
        (v * 3).sum().backward()  # (the slice saved nothing)
        return v

    def raises(w):
        v = w.exp()
        v.sum().backward()
        v.sum().backward()
        return v

    compiled = ember.compile(runs_again)
    for _ in range(3):
        w = ember.ones(3, requires_grad=True)
        compiled(w)
        assert w.grad.tolist() == [4.0, 4.0, 0.0]
    compiled = ember.compile(raises)
    for _ in range(3):
        with pytest.raises(RuntimeError, match=TWICE):
            compiled(ember.ones(3, requires_grad=True))


def test_a_custom_function_that_saved_tensors_raises_and_one_that_saved_none_runs_again():
    class SavesNone(ember.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    class SavesButNeverReads(SavesNone):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 2

    # (PyTorch raises when the backward reads ctx.saved_tensors, not when forward saved)
    for function, expected in ((Saves, None), (SavesNone, [4.0, 4.0, 4.0]), (SavesButNeverReads, [4.0, 4.0, 4.0])):
        w = ember.ones(3, requires_grad=True)
        v = function.apply(w)
        v.sum().backward()
        if expected is None:
            with pytest.raises(RuntimeError, match=TWICE):
                v.sum().backward()
        else:
            v.sum().backward()
            assert w.grad.tolist() == expected


def test_the_result_of_a_compiled_call_cannot_be_backwarded_twice():
    compiled = ember.compile(lambda w: ember.exp(w) * 3)
    for _ in range(4):  # (traced calls, then compiled ones: their backward program kept the forward's values)
        w = ember.ones(3, requires_grad=True)
        out = compiled(w)
        out.sum().backward()
        with pytest.raises(RuntimeError, match=TWICE):
            out.sum().backward()
        assert w.grad.tolist() == pytest.approx([3 * 2.718281828] * 3)  # (not added twice)


def test_a_result_whose_history_a_backward_inside_freed_is_backwarded_again_as_eagerly():
    def runs_again(w):  # a reshape, an add and a sum saved nothing
        loss = (w.reshape(3, 1) + 1).sum()
        loss.backward()
        return loss

    def raises(w):
        loss = (w * w).sum()
        loss.backward()
        return loss

    for fn, expected in ((runs_again, [2.0, 2.0, 2.0]), (raises, None)):
        compiled = ember.compile(fn)
        for _ in range(4):
            w = ember.ones(3, requires_grad=True)
            loss = compiled(w)
            if expected is None:
                with pytest.raises(RuntimeError, match=TWICE):
                    loss.backward()
            else:
                loss.backward()
                assert w.grad.tolist() == expected


def test_autograd_grad_with_respect_to_a_freed_output_does_not_run_its_node():
    for make in (lambda w: F.softmax(w, 0), lambda w: Saves.apply(w), lambda w: w.exp(),
                 lambda w: F.layer_norm(w, (3,))):
        w = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
        h = make(w)
        h.sum().backward()
        (grad,) = ember.autograd.grad((h * 3).sum(), h)  # (as PyTorch: h's own node never runs)
        assert grad.tolist() == [3.0, 3.0, 3.0]


def test_a_hook_on_a_freed_nodes_output_runs_before_the_error():
    w = ember.ones(3, requires_grad=True)
    h = F.softmax(w, 0)
    seen = []
    h.register_hook(lambda g: seen.append(1))
    h.sum().backward()
    with pytest.raises(RuntimeError, match=TWICE):
        h.sum().backward()
    assert seen == [1, 1]  # (PyTorch runs the hook, then raises unpacking what softmax saved)
