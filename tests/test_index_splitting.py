"""compiler/index_splitting.py: innermost loops cut where a comparison of their variable
changes its outcome, so concatenations and sums of pads become plain copies; the cut points
against brute force, and compiled results against eager ones over random concatenations,
pads and slice gradients."""
import itertools

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.compiler import loop_ir as L
from ember.compiler.index_splitting import MAX_PIECES, _turning_points, split_loops_at_conditions
from ember.compiler.backends import render_code


@pytest.mark.parametrize("op", L.COMPARISONS)
def test_turning_points_are_where_the_outcome_changes(op):
    test = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
            "ne": np.not_equal}[op]
    v = L.var("v", 60)
    for c, k in itertools.product((-3, -2, -1, 1, 2, 5), (-70, -31, -8, -1, 0, 3, 17)):
        values = np.arange(-5, 65)
        outcome = test(c * values + k, 0)
        expected = {int(p) for p, before, now in zip(values[1:], outcome, outcome[1:]) if before != now}
        got = {p for p in _turning_points(op, L.iadd(L.imul(v, c), k), v) if values[1] <= p <= values[-1]}
        assert got == expected, (op, c, k)
    assert _turning_points(op, L.iadd(v, L.var("w", 4)), v) == set()  # other variables: no cut


def _kernel_text(fn, *args):
    return render_code(ember.trace(fn, *args), "kernels")


def test_a_concatenation_becomes_one_plain_loop_per_piece():
    a, b, c, x = ember.randn(4, 128), ember.randn(4, 100), ember.randn(4, 156), ember.randn(4, 384)
    text = _kernel_text(lambda a, b, c, x: ember.cat([a * 2, b + 1, c], dim=1) + x, a, b, c, x)
    assert text.count("for i1p") == 3 and "?" not in text and "maximum" not in text, text


def test_the_gradient_of_three_slices_is_three_copies():
    # attention's q, k, v cut out of one projection: the gradient sums three pads
    qkv = ember.randn(8, 384, requires_grad=True)

    def step(qkv):
        q, k, v = qkv.split(128, dim=1)
        (q.sin() + k.cos() * v).sum().backward()
        return qkv.grad
    text = _kernel_text(step, qkv)
    assert "for i1p2 in 0..128" in text and "? " not in text.split("for i1p0")[1], text


def test_more_pieces_than_max_pieces_stay_one_loop():
    parts = [ember.randn(2, 8) for _ in range(MAX_PIECES + 2)]
    text = _kernel_text(lambda *p: ember.cat([t * 2 for t in p], dim=1), *parts)
    assert "for i1p" not in text and "?" in text


def test_a_loop_without_conditions_is_left_alone():
    v = L.var("v", 10)
    loop = L.Loop(v, [L.Store(0, v, L.load(1, v, "float32"))])
    assert split_loops_at_conditions([loop]) == [loop]


def test_random_concatenations_pads_and_slice_gradients_compile_to_eager_results():
    rng = np.random.default_rng(0)
    for case in range(24):
        rows = int(rng.integers(1, 5))
        widths = [int(w) for w in rng.integers(1, 40, size=int(rng.integers(2, 5)))]
        pieces = [ember.tensor(rng.standard_normal((rows, w)).astype(np.float32)) for w in widths]
        left, right = (int(p) for p in rng.integers(0, 9, size=2))
        cut = int(rng.integers(1, sum(widths)))
        kind = case % 3

        def fn(*p):
            joined = ember.cat([t * (k + 1) for k, t in enumerate(p)], dim=1)
            if kind == 0:
                return joined.exp()
            if kind == 1:
                return F.pad(joined, (left, right)) + 1.0
            return joined[:, :cut].sum() * 2 + joined[:, cut:].mean()

        compiled = ember.compile(fn)
        for _ in range(2):
            got = compiled(*pieces)
        np.testing.assert_allclose(got.numpy(), fn(*pieces).numpy(), rtol=1e-5, atol=1e-5)
        assert compiled.report.compiled_calls == 1

        whole = ember.tensor(rng.standard_normal((rows, sum(widths))).astype(np.float32), requires_grad=True)

        def grad_of_slices(whole):
            parts = whole.split(widths, dim=1)
            total = sum(((k + 1) * part).tanh().sum() for k, part in enumerate(parts))
            return ember.autograd.grad(total, whole)[0]

        compiled_grad = ember.compile(grad_of_slices)
        for _ in range(2):
            got = compiled_grad(whole)
        np.testing.assert_allclose(got.numpy(), grad_of_slices(whole).numpy(), rtol=1e-5, atol=1e-6)
