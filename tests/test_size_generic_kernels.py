"""Flat kernels of one structure share one size-generic LLVM function whatever their sizes
(compiler/cpu/size_generic.py): an optimizer's update of every parameter and the sums of
squares of gradient clipping are one function each, with the element count an argument and
the choice of threads made per call. Checked against eager mode and by counting functions."""
import re

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.compiler.backends import render_code
from ember.compiler.cpu.size_generic import flat_count, generic_symbol
from ember.compiler.driver import lower, plan
from ember.compiler.cpu.target import CpuTarget


def _model(widths):
    ember.manual_seed(0)
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _train(widths, compiled, steps=5, clip=0.5):
    model = _model(widths)
    opt = ember.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)

    def step(x, y):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        ember.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    ember.manual_seed(1)
    x, y = ember.randn(7, widths[0]), ember.randn(7, widths[-1])
    run = ember.compile(step) if compiled else step
    losses = [run(x, y).item() for _ in range(steps)]
    return losses, [p.detach().numpy().copy() for p in model.parameters()], step, (x, y), run


@pytest.mark.parametrize("threads", [1, 2])
def test_a_training_step_with_size_generic_updates_matches_eager(threads):
    # 1100 x 1000 weights: their update is worth the threads (decided per call, from n), the
    # others are not; both go through the same function
    widths = (1000, 1100, 24, 3)
    before = ember.get_num_threads()
    ember.set_num_threads(threads)
    try:
        eager_losses, eager_weights, _, _, _ = _train(widths, False)
        losses, weights, _, _, run = _train(widths, True)
    finally:
        ember.set_num_threads(before)
    assert run.report.compiled_calls >= 3
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5, atol=1e-6)
    for got, want in zip(weights, eager_weights):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_every_parameters_update_and_sum_of_squares_is_one_function():
    widths = (20, 40, 48, 24, 17)  # 8 parameters of 8 sizes (a sum of 16 or fewer is unrolled)
    _, _, step, args, _ = _train(widths, False, steps=1)
    graph = ember.trace(step, *args)
    llvm = render_code(graph, "llvm")
    # (LLVM may clone a function for some of its callers, as `name.1`: still one function of ours)
    functions = {re.sub(r"\.\d+$", "", name) for name in re.findall(r"define internal fastcc void @([\w.]+)\(", llvm)}
    kernels = [k for k in lower(plan(graph), CpuTarget()).kernels]
    updates = [k for k in kernels if k.name.startswith("elementwise_mul_sub_add")]
    sums = [k for k in kernels if k.name.startswith("reduce_mul_sum_scalar") and flat_count(k)]
    assert len(updates) == 8 and len(sums) == 8, [k.name for k in kernels]
    assert {f for f in functions if f.startswith("elementwise_mul_sub_add")} == {generic_symbol(updates[0].name)}
    assert len({f for f in functions if f.startswith("reduce_mul_sum_scalar") and f.endswith("_n")}) == 1
    # the entry passes each kernel its element count
    # its debug location is the model line of its first kernel (the optimizer's), not line 0
    subprogram = re.search(rf'DISubprogram\(name: "{generic_symbol(updates[0].name)}", .*?file: (![0-9]+), line: (\d+)',
                           llvm)
    assert subprogram and int(subprogram.group(2)) > 0, subprogram
    call = rf"call fastcc void @{generic_symbol(updates[0].name)}(?:\.\d+)?\(.*, i64 (\d+)\)"
    counts = {int(c) for c in re.findall(call, llvm)}
    assert counts == {20 * 40, 40, 40 * 48, 48, 48 * 24, 24, 24 * 17, 17}


def test_only_flat_kernels_have_a_size_generic_form():
    def f(x, b, w):
        return (x * 2 + b).sum(), (x * 3).sum(dim=1), x @ w, (x * x).sum()

    graph = ember.trace(f, ember.randn(4, 5), ember.randn(5), ember.randn(5, 2))
    counts = {k.name: flat_count(k) for k in lower(plan(graph), CpuTarget()).kernels}
    # a broadcast operand (b: read at i % 5), a sum per row (the loop's index does more than
    # address) and a matrix product are not flat; the sum of squares is, over 20 elements
    assert sorted(counts.values(), key=str) == [20, None, None, None], counts
