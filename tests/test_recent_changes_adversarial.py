"""Adversarial checks of recent changes: index-set splitting of innermost loops (cat, pad,
slice gradients), the float32 erf polynomials, the node-by-node comparison of two traces
(segments.same_structure) in jit's confirmation, Graph.add_node filling networkx's dicts,
and the paused cyclic GC / set_num_threads' BLAS limit."""
import gc
import math

import networkx as nx
import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.frontend.segments import graph_structure, same_structure
from ember.ir.graph import Graph


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True) \
        and np.array_equal(np.signbit(a), np.signbit(b))


# ----------------------------------------------------------------------------- 1. index-set splitting
def _f(rng, *shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 10).astype(dtype)


def _weights(shape):
    return ember.tensor(np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) % 7 - 3)


def _check_forward_backward(fn, arrays, grad=True):
    eager = fn(*[ember.tensor(a) for a in arrays])
    compiled = ember.compile(fn)(*[ember.tensor(a) for a in arrays])
    assert _same(compiled.numpy(), eager.numpy())
    if not grad:
        return
    w = _weights(eager.shape)

    def step(*xs):
        loss = (fn(*xs) * w).sum()
        loss.backward()
        return loss

    eager_in = [ember.tensor(a, requires_grad=True) for a in arrays]
    step(*eager_in)
    compiled_in = [ember.tensor(a, requires_grad=True) for a in arrays]
    ember.compile(step)(*compiled_in)
    for e, c in zip(eager_in, compiled_in):
        assert _same(c.grad.numpy(), e.grad.numpy())


CASES = {
    "cat_last_dim_5_pieces": (lambda a, b, c, d, e: ember.cat([a, b, c, d, e], dim=-1),
                              [(3, 1), (3, 7), (3, 2), (3, 1), (3, 9)]),
    "cat_middle_dim": (lambda a, b, c: ember.cat([a, b * 2, c], dim=1), [(2, 3, 5), (2, 1, 5), (2, 4, 5)]),
    "cat_9_size1_pieces_dim0": (lambda *xs: ember.cat(list(xs), dim=0), [(1, 3)] * 9),
    "cat_9_size1_pieces_last": (lambda *xs: ember.cat(list(xs), dim=1) + 1, [(3, 1)] * 9),
    "cat_large_uneven": (lambda a, b, c: ember.cat([a, b, c], 1) * 2, [(8, 300), (8, 1), (8, 257)]),
    "negative_pad_crop": (lambda a: F.pad(a, (-1, 2)), [(3, 6)]),
    "negative_pad_2d": (lambda a: F.pad(a, (2, -3, -1, 1)), [(4, 6)]),
    "negative_pad_both_sides": (lambda a: F.pad(a * 2, (-2, -2)), [(4, 6)]),
    "pad_value": (lambda a: F.pad(a, (3, 1), value=-2.5), [(3, 4)]),
    "pad_reflect": (lambda a: F.pad(a, (2, 3), mode="reflect"), [(2, 3, 6)]),
    "pad_replicate": (lambda a: F.pad(a, (2, 3), mode="replicate"), [(2, 3, 6)]),
    "pad_circular": (lambda a: F.pad(a, (2, 3), mode="circular"), [(2, 3, 6)]),
    "pad2d_reflect": (lambda a: F.pad(a, (1, 2, 2, 1), mode="reflect"), [(1, 2, 4, 5)]),
    "split_then_cat": (lambda a: ember.cat([p * (i + 1) for i, p in enumerate(ember.split(a, 3, dim=1))], dim=1),
                       [(2, 11)]),
    "uneven_split_sizes": (lambda a: ember.cat([p * (i + 1) for i, p in enumerate(ember.split(a, [1, 2, 1, 3, 2], 1))],
                                               1) ** 2, [(4, 9)]),
    "chunk_sums": (lambda a: sum(p.sum(1) for p in ember.chunk(a, 4, dim=1)), [(2, 13)]),
    "narrow_overlapping": (lambda a: a.narrow(1, 2, 3) * 2 + a.narrow(1, 5, 3), [(3, 9)]),
    "step_slices": (lambda a: a[:, ::2] * 3 + a[:, 1::2], [(3, 10)]),
    "step_slices_3": (lambda a: a[:, 1:8:3] * 3 + a[:, 0:9:3] + a[:, ::4][:, :3], [(3, 10)]),
    "flip_then_cat": (lambda a, b: ember.cat([ember.flip(a, [1]), b], dim=1), [(2, 5), (2, 3)]),
    "roll_of_cat": (lambda a, b: ember.roll(ember.cat([a, b], dim=1), 3, 1), [(2, 5), (2, 3)]),
    "cat_then_slice": (lambda a, b: ember.cat([a, b], 1)[:, 2:9], [(2, 5), (2, 6)]),
    "stack_last": (lambda a, b: ember.stack([a, b, a], -1), [(2, 5), (2, 5)]),
    "pad_of_cat": (lambda a, b: F.pad(ember.cat([a, b], 1), (2, -1)), [(3, 4), (3, 5)]),
    "cat_of_pads": (lambda a, b: ember.cat([F.pad(a, (1, 1)), F.pad(b, (-1, 2))], 1), [(3, 4), (3, 5)]),
    "ten_pieces_over_budget": (lambda a: ember.cat([a[:, i:i + 1] * i for i in range(10)], 1), [(4, 12)]),
    "flip_cat_pad_mixture": (lambda a, b, c: ember.cat([a, F.pad(b, (2, -1)), c[:, ::2], ember.flip(a, [1])], 1) * 2,
                             [(3, 5), (3, 1), (3, 7)]),
    "tril_triu": (lambda a: ember.tril(a) + ember.triu(a, 2), [(6, 6)]),
    "where_on_iota": (lambda a: ember.where(ember.arange(10) < 4, a, a * 2), [(3, 10)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_movement_compiles_exactly_as_eager_forward_and_backward(name):
    fn, shapes = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    _check_forward_backward(fn, [_f(rng, *s) for s in shapes])


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.float16, np.float64])
def test_cat_and_pad_of_other_dtypes(dtype):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((2, 3)) * 5).astype(dtype)
    b = (rng.standard_normal((2, 2)) * 5).astype(dtype)
    _check_forward_backward(lambda a, b: ember.cat([a, b, a, b, a], dim=-1), [a, b], grad=False)
    if dtype is not np.bool_:
        _check_forward_backward(lambda a: F.pad(a, (3, -1), value=1), [a], grad=False)


def test_cat_with_empty_pieces():
    rng = np.random.default_rng(4)
    arrays = [_f(rng, 2, 3), _f(rng, 2, 0), _f(rng, 2, 4), _f(rng, 2, 0)]
    _check_forward_backward(lambda a, b, c, d: ember.cat([a, b, c, d], dim=1) * 2, arrays, grad=False)


def test_random_concatenations_with_pads_match_eager():
    rng = np.random.default_rng(11)
    for trial in range(24):
        nd = int(rng.integers(1, 4))
        dim = int(rng.integers(-nd, nd))
        base = [int(v) for v in rng.integers(1, 5, nd)]
        shapes = []
        for _ in range(int(rng.integers(1, 8))):
            s = list(base)
            s[dim] = int(rng.integers(1, 6))
            shapes.append(tuple(s))
        dtype = [np.float32, np.int64, np.int32, np.float64][trial % 4]
        arrays = [(rng.standard_normal(s) * 10).astype(dtype) for s in shapes]
        pads = tuple(int(v) for v in rng.integers(-1, 3, 2))

        def fn(*xs):
            y = ember.cat(list(xs), dim)
            if y.shape[-1] + min(pads[0], 0) + min(pads[1], 0) > 0:
                y = F.pad(y, pads)
            return y + y

        _check_forward_backward(fn, arrays, grad=False)


def test_dynamic_sizes_cat_pad_flip():
    rng = np.random.default_rng(7)

    def fn(a, b):
        return F.pad(ember.cat([ember.flip(a, [-1]), b, a], -1), (3, -2)) * 2 + ember.cat([a, a, b], -1)[..., 1:-1]\
            .sum(-1, keepdim=True)

    compiled = ember.compile(fn, dynamic=True)
    for n in [3, 5, 8, 13, 20, 40]:  # integer-valued: the row sum is exact in any order
        a = ember.tensor(rng.integers(-8, 8, (2, n)).astype(np.float32))
        b = ember.tensor(rng.integers(-8, 8, (2, 4)).astype(np.float32))
        assert _same(compiled(a, b).numpy(), fn(a, b).numpy()), n


def test_cat_pad_program_on_the_emulated_gpu():
    rng = np.random.default_rng(9)
    arrays = [_f(rng, 3, 5), _f(rng, 3, 1), _f(rng, 3, 7)]
    fn = CASES["flip_cat_pad_mixture"][0]
    got = ember.compile(fn, backend="ptx-emulated")(*[ember.tensor(a) for a in arrays])
    assert _same(got.numpy(), fn(*[ember.tensor(a) for a in arrays]).numpy())

    def step(a):
        loss = (ember.cat([p * (i + 1) for i, p in enumerate(ember.split(a, [1, 2, 1, 3, 2], 1))], 1) ** 2).sum()
        loss.backward()
        return loss

    x = _f(rng, 4, 9)
    a1, a2 = ember.tensor(x, requires_grad=True), ember.tensor(x, requires_grad=True)
    ember.compile(step, backend="ptx-emulated")(a1)
    step(a2)
    np.testing.assert_allclose(a1.grad.numpy(), a2.grad.numpy(), rtol=1e-6)


# ----------------------------------------------------------------------------- 2. erf (float32)
_erf64 = np.frompyfunc(math.erf, 1, 1)


def _ulp_errors(got, truth):
    with np.errstate(all="ignore"):
        rounded = truth.astype(np.float32)
        spacing = np.maximum(np.spacing(np.abs(rounded)).astype(np.float64), np.finfo(np.float32).smallest_subnormal)
        errors = np.abs(got.astype(np.float64) - truth) / spacing
    same = (got == rounded) | (np.isnan(got) & np.isnan(rounded))
    return np.where(same, 0.0, errors)


def _erf_points():
    rng = np.random.default_rng(21)
    parts = [np.linspace(-6, 6, 120_001), rng.uniform(-1.2, 1.2, 60_000), rng.uniform(3.5, 6, 20_000),
             -rng.uniform(3.5, 6, 20_000)]
    for b in [0.5, 0.84375, 0.875, 1.0, 1.25, 2.0, 2.5, 3.0, 3.92, 4.0]:
        centre = np.float32(b)
        around = [centre]
        for direction in (np.float32(np.inf), np.float32(-np.inf)):
            v = centre
            for _ in range(400):
                v = np.nextafter(v, direction)
                around.append(v)
        around = np.array(around, np.float32)
        parts += [around, -around]
    tiny = (np.arange(1, 3000, dtype=np.uint32) * 2731).view(np.float32)  # subnormals
    parts += [tiny, -tiny, np.array([1e-38, 1.17549435e-38, 1e-20, 3.4e38, -3.4e38, 5.9, -5.9, 3.92, -3.92])]
    return np.concatenate([np.asarray(p, np.float32) for p in parts]).astype(np.float32)


@pytest.mark.parametrize("path", ["eager", "compiled"])
def test_erf_float32_within_two_ulp(path):
    x = _erf_points()
    assert x.size >= 4096  # eager goes through the compiled kernels at this size
    truth = _erf64(x.astype(np.float64)).astype(np.float64)
    if path == "eager":
        got = ember.erf(ember.tensor(x)).numpy()
    else:
        got = ember.compile(lambda a: ember.erf(a))(ember.tensor(x)).numpy()
    assert got.dtype == np.float32
    errors = _ulp_errors(got, truth)
    worst = int(np.argmax(errors))
    assert errors.max() <= 2.0, (x[worst], got[worst], truth[worst])
    assert np.all(np.abs(got) <= 1)
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(got[order]) >= 0)  # monotone


@pytest.mark.parametrize("path", ["eager", "compiled"])
def test_erf_special_values(path):
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, -3.4e38], np.float32)
    x = np.concatenate([special, np.zeros(5000, np.float32)])  # large: eager's compiled path
    if path == "eager":
        got = ember.erf(ember.tensor(x)).numpy()[:9]
    else:
        got = ember.compile(lambda a: ember.erf(a))(ember.tensor(x)).numpy()[:9]
    assert got[0] == 0 and not np.signbit(got[0])
    assert got[1] == 0 and np.signbit(got[1])
    assert got[2] == 1 and got[3] == -1 and np.isnan(got[4])
    assert got[5] > 0 and got[6] < 0  # erf(x) ~ 1.128 x: the smallest subnormal stays nonzero with its sign
    assert got[7] == 1 and got[8] == -1


def test_gelu_exact_forward_and_backward_near_float64():
    x = np.linspace(-10, 10, 20001).astype(np.float32)
    x64 = x.astype(np.float64)
    cdf = 0.5 * (1 + _erf64(x64 / math.sqrt(2)).astype(np.float64))
    pdf = np.exp(-x64 * x64 / 2) / math.sqrt(2 * math.pi)

    def step(z):
        out = F.gelu(z)
        out.sum().backward()
        return out

    for run in (step, ember.compile(step)):
        t = ember.tensor(x, requires_grad=True)
        out = run(t)
        np.testing.assert_allclose(out.detach().numpy(), x64 * cdf, rtol=2e-6, atol=2e-7)
        np.testing.assert_allclose(t.grad.numpy(), cdf + x64 * pdf, rtol=2e-6, atol=2e-7)


# ----------------------------------------------------------------------------- 3. trace confirmation
def _run_training_like(consts, body):
    """A compiled step that mutates state (so a confirmation trace follows the first), its
    Python constant changed between calls; every call must equal eager."""
    w = ember.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    we = ember.tensor(w.numpy().copy())
    box = {"c": None}
    compiled = ember.compile(lambda x: body(w, x, box["c"]))
    x = ember.tensor(np.ones((2, 3), np.float32))
    for i, c in enumerate(consts):
        box["c"] = c
        got = compiled(x).numpy()
        want = body(we, x, c).numpy()
        assert _same(got, want), (i, c)
        assert _same(w.numpy(), we.numpy()), (i, c)
    return compiled


def _scale(w, x, c):
    w.add_(x * c)
    return (w * c).sum(0)


def _scale_tensor(w, x, c):
    w.add_(x * ember.tensor(c))
    return (w * ember.tensor(c)).sum(0)


@pytest.mark.parametrize("consts,body", [
    ([2.0, 2.0, 3.0, 3.0], _scale),
    ([1, 1, 1.5, 1.5], _scale),
    ([1, 1.0, 1, 1.0], _scale),
    ([True, 1, 1.0, True], _scale),
    ([float("nan")] * 2 + [1.0, 1.0], _scale),
    ([np.float32(2.0), 2.0, np.float64(2.0), 2], _scale),
    ([np.array([1., 2., 3.], np.float32)] * 2 + [np.array([1., 2., 4.], np.float32)] * 2, _scale_tensor),
    ([(1., 2., 3.)] * 2 + [[1., 2., 4.]] * 2, lambda w, x, c: _scale_tensor(w, x, list(c))),
    ([{"a": 1}, {"a": 1}, {"a": 1.0}, {"a": 2}], lambda w, x, c: _scale(w, x, c["a"])),
    ([(0,), (0,), [0], (1,), 1], lambda w, x, c: (w.add_(x), w.sum(dim=c))[1]),
    ([0, 0, 1, -1, -2], lambda w, x, c: (w.add_(x), w[c])[1]),
    ([2, 2, 2.0, 2.0, 3], lambda w, x, c: (w.add_(x), w ** c)[1]),
    ([1, 1, 1.0, True, 1], lambda w, x, c: (w.mul_(0.5), ember.full((2, 3), c) + w)[1]),
    ([0, 0, 0.5, 0.5, True], lambda w, x, c: (w.add_(x), ember.clamp(x * w, min=c))[1]),
    ([float("nan")] * 5, lambda w, x, c: (w.add_(x), x / c + w)[1]),
], ids=["float", "int_float", "alternate", "bool_int_float", "nan", "numpy_scalars", "numpy_array", "tuple_list",
        "dict", "dim_tuple_list", "index_sign", "pow", "full_dtype", "clamp", "nan_5"])
def test_a_changed_constant_after_confirmation_never_runs_a_stale_program(consts, body):
    _run_training_like(consts, body)


def test_signed_zero_constant_is_not_stale():
    # guards key a zero float with its sign (python_guards._plain_key): x / 0.0 is inf, x / -0.0
    # is -inf, so a program traced with one must not serve the other (torch.compile's do share)
    _run_training_like([0.0, 0.0, -0.0, -0.0], lambda w, x, c: (w.add_(x), x / c + w)[1])


def test_a_closed_over_signed_zero_retraces():
    box = {"c": 0.0}
    f = ember.compile(lambda x: x / box["c"])
    x = ember.ones(3)
    for value, expected in ((0.0, np.inf), (-0.0, -np.inf), (np.float32(-0.0), -np.inf), (0.0, np.inf)):
        box["c"] = value
        for _ in range(2):
            assert (f(x).numpy() == expected).all(), value


def _traced(scale, name="f"):
    x = ember.tensor(np.ones((2, 3), np.float32))

    def f(a):
        return a * scale + 1

    f.__name__ = name
    return ember.trace(f, x)


@pytest.mark.parametrize("a,b", [(1, 1.0), (1, True), (1.0, True), (0.0, -0.0), (2.0, np.float32(2.0)),
                                 (2.0, np.float64(2.0)), (2.0, 3.0), (float("nan"), float("nan"))])
def test_same_structure_agrees_with_graph_structure_on_traces(a, b):
    ga, gb = _traced(a), _traced(b)
    assert same_structure(ga, ga.copy())
    assert same_structure(ga, gb) == (graph_structure(ga) == graph_structure(gb))
    # constants are traced as float32 values: only the value and the sign of a zero matter
    differ = (float(a), math.copysign(1, float(a))) != (float(b), math.copysign(1, float(b))) and a == a
    assert same_structure(ga, gb) == (not differ)


def test_same_structure_sees_each_kind_of_difference():
    base = _traced(2.0)
    assert same_structure(base, _traced(2.0))
    assert not same_structure(base, _traced(2.0, name="g"))
    # a node's name, source line, attrs of every value kind
    for key, value, other in [("value", 2.0, float("nan")), ("value", float("nan"), float("nan")),
                              ("arr", np.array([1., 2.]), np.array([1., 3.])),
                              ("arr", np.array([1., 2.], np.float32), np.array([1., 2.], np.float64)),
                              ("t", (1, 2), [1, 2]), ("t", (1, 2.0), (1, 2)), ("d", {"k": 1}, {"k": 1.0}),
                              ("d", {"k": 1}, {"k": True}), ("s", "x", "y"), ("z", 0.0, -0.0)]:
        g1, g2 = base.copy(), base.copy()
        node = max(g1.nx.nodes)
        g1.nx.nodes[node]["attrs"][key] = value
        g2.nx.nodes[node]["attrs"][key] = other
        assert same_structure(g1, g2) == (graph_structure(g1) == graph_structure(g2)), (key, value, other)
        if key != "value" or value == value:
            assert not same_structure(g1, g2), (key, value, other)
    g1, g2 = base.copy(), base.copy()
    g2.nx.nodes[max(g2.nx.nodes)]["name"] = "renamed"
    assert not same_structure(g1, g2)
    g2 = base.copy()
    g2.nx.nodes[max(g2.nx.nodes)]["source"] = "elsewhere.py:1"
    assert not same_structure(g1, g2)


def test_same_structure_sees_params_order_and_guards():
    g1, g2 = Graph("p"), Graph("p")
    a1, b1 = g1.add_param("a", (2,), "float32"), g1.add_param("b", (2,), "float32")
    g1.outputs = [g1.add_node("add", [a1, b1], (2,), "float32")]
    b2, a2 = g2.add_param("b", (2,), "float32", node_id=1), g2.add_param("a", (2,), "float32", node_id=0)
    g2.outputs = [g2.add_node("add", [a2, b2], (2,), "float32")]
    assert not same_structure(g1, g2)  # the same nodes, the params listed in another order
    assert same_structure(g1, g2) == (graph_structure(g1) == graph_structure(g2))
    g3 = g1.copy()
    assert same_structure(g1, g3)
    traced = ember.trace(lambda a: a * 2, ember.ones(2))
    assert same_structure(traced, traced.copy())


# ----------------------------------------------------------------------------- 4. Graph.add_node
def test_traced_graph_matches_networkx_built_graph():
    x = ember.tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    g = ember.trace(lambda a: (a * a + ember.ones(3, 4)).sum(0) * 2, x)
    g.verify()
    ref = nx.MultiDiGraph()
    for n, d in g.nx.nodes(data=True):
        ref.add_node(n, **d)
        for position, source in enumerate(d["inputs"]):
            ref.add_edge(source, n, key=position)
    assert sorted(ref.edges(keys=True)) == sorted(g.nx.edges(keys=True))
    assert dict(ref.in_degree()) == dict(g.nx.in_degree()) and dict(ref.out_degree()) == dict(g.nx.out_degree())
    mul = next(n for n in g.nx.nodes if g.node(n).op == "mul" and g.node(n).inputs[0] == g.node(n).inputs[1])
    assert sorted(g.nx.in_edges(mul, keys=True)) == [(0, mul, 0), (0, mul, 1)]
    assert g.users(0) == [mul]
    order = list(nx.topological_sort(g.nx))
    assert sorted(order) == sorted(g.nx.nodes) and order.index(0) < order.index(mul)
    assert nx.ancestors(g.nx, g.outputs[0]) == set(g.nx.nodes) - {g.outputs[0]}
    assert nx.is_directed_acyclic_graph(g.nx)
    assert g.copy() == g
    back = Graph.from_json(g.to_json())
    assert back == g and sorted(back.nx.edges(keys=True)) == sorted(g.nx.edges(keys=True))
    renumbered = g.renumbered(list(nx.topological_sort(g.nx)))
    renumbered.verify()
    assert len(renumbered.nx) == len(g.nx) and renumbered.nx.number_of_edges() == g.nx.number_of_edges()


def test_add_node_missing_input_raises_naming_the_op_and_leaves_graph_intact():
    g = Graph("t")
    a = g.add_input((2,), "float32", "a")
    with pytest.raises(ValueError, match="mul"):
        g.add_node("mul", [a, 99], (2,), "float32")
    assert len(g.nx) == 1 and g.nx.number_of_edges() == 0
    with pytest.raises(ValueError, match="exp"):
        g.add_node("exp", [5], (2,), "float32", node_id=5)  # reading itself
    assert 5 not in g.nx
    square = g.add_node("mul", [a, a], (2,), "float32")
    const = g.add_node("full", [], (2,), "float32", attrs={"value": 1.0})
    assert sorted(g.nx.edges(keys=True)) == [(a, square, 0), (a, square, 1)]
    assert g.users(a) == [square] and g.users(const) == []
    g.outputs = [square]
    g.replace_uses(a, const)
    assert g.node(square).inputs == (const, const)
    assert sorted(g.nx.edges(keys=True)) == [(const, square, 0), (const, square, 1)]
    assert g.users(a) == []
    g.remove_node(a)
    assert a not in g and g.inputs == []
    assert list(nx.topological_sort(g.nx)) == [const, square]


# ----------------------------------------------------------------------------- 5. paused GC, threads
def test_gc_restored_after_compiled_calls_and_errors():
    x = ember.ones(3, 4)
    assert gc.isenabled()
    f = ember.compile(lambda a: a * 2 + 1)
    f(x)
    f(x)
    assert gc.isenabled()

    def bad(a):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        ember.compile(bad)(x)
    assert gc.isenabled()
    with pytest.raises(KeyError):
        ember.trace(bad, x)
    assert gc.isenabled()


def test_gc_the_caller_disabled_stays_disabled():
    x = ember.ones(3, 4)

    def bad(a):
        raise KeyError("boom")

    gc.disable()
    try:
        f = ember.compile(lambda a: a * 3 + 1)
        f(x)
        f(x)
        assert not gc.isenabled()
        with pytest.raises(KeyError):
            ember.compile(bad)(x)
        assert not gc.isenabled()
        with pytest.raises(KeyError):
            ember.trace(bad, x)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_set_num_threads_limits_blas_and_rejects_bad_values():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(1)
        blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert ember.get_num_threads() == 1 and all(n == 1 for n in blas)
        ember.set_num_threads(2)
        for bad in [0, -1, True, 1.5]:
            with pytest.raises(RuntimeError):
                ember.set_num_threads(bad)
        assert ember.get_num_threads() == 2
        blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert all(n == 2 for n in blas)
        a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        np.testing.assert_allclose(ember.tensor(a).matmul(ember.tensor(a)).numpy(), a @ a, rtol=1e-5, atol=1e-4)
    finally:
        ember.set_num_threads(before)


def test_a_compiled_modules_signed_zero_or_int_zero_setting_retraces():
    class Divide(ember.nn.Module):
        def __init__(self):
            super().__init__()
            self.eps = 0.0

        def forward(self, t):
            return t / self.eps

    module = Divide()
    compiled = ember.compile(module)
    x = ember.tensor([1.0, -2.0])
    for value in (0.0, -0.0, 0.0, 0, False, -0.0):
        module.eps = value
        np.testing.assert_array_equal(compiled(x).numpy(), module(x).numpy())
    assert any("eps: 0.0 -> -0.0" in r for r in compiled.report.recompiles)
