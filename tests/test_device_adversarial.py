"""Adversarial checks of tensors on a CUDA device (frontend/device_tensors.py, frontend/device_ops.py,
runtime/device_arrays.py, runtime/cuda_program.py, the device paths of jit.py and autograd.py).

The oracle for every value is the same code on CPU tensors (ember eager on the CPU, which
matches PyTorch); the oracle for devices and errors is PyTorch's behaviour. Without a GPU these
run on the grid emulator (EMBER_EMULATE_CUDA=1). Tensors stay tiny: the emulator is slow.

Sections: the defects found (each test fails until fixed; its docstring says expected vs actual),
then the areas checked that hold (so they stay checked). Notes: /work/notes/adversarial_device.md.
"""
import copy
import io
import pickle

import numpy as np
import pytest

import ember as torch
from ember import nn
from ember.nn import functional as F
from ember.frontend.device_tensors import cuda_runtime_device
from ember.runtime.cuda_driver import cuda_available
from test_device_tensors import training_step


@pytest.fixture(autouse=True)
def cuda(monkeypatch):
    """The cuda device: the GPU when there is one, else the grid emulator."""
    if not cuda_available():
        monkeypatch.setenv("EMBER_EMULATE_CUDA", "1")
    return cuda_runtime_device()


CUDA = torch.device("cuda", 0)
RNG = np.random.default_rng(0)
A = RNG.standard_normal((4, 6)).astype(np.float32)
B = RNG.standard_normal((4, 6)).astype(np.float32)


def host(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def assert_same(on_device, on_host, rtol=1e-4, atol=1e-5):
    """`on_device` is on cuda and equals `on_host` (the same computation on CPU tensors)."""
    if isinstance(on_host, (list, tuple)):
        assert len(on_device) == len(on_host)
        for d, h in zip(on_device, on_host):
            assert_same(d, h, rtol, atol)
        return
    if not isinstance(on_host, torch.Tensor):
        assert on_device == on_host
        return
    assert on_device.device == CUDA, f"result on {on_device.device}"
    assert on_device.dtype == on_host.dtype and tuple(on_device.shape) == tuple(on_host.shape)
    np.testing.assert_allclose(host(on_device).astype(np.float64), host(on_host).astype(np.float64),
                               rtol=rtol, atol=atol, equal_nan=True)


def on_both(fn, *arrays):
    """fn on CPU tensors and on the same values on cuda: (cpu result, cuda result)."""
    return fn(*[torch.tensor(a) for a in arrays]), fn(*[torch.tensor(a).cuda() for a in arrays])


def in_place(fn):
    """A function of (a, b) that writes into `a` (or a view of it) and returns `a`."""
    def run(a, b):
        fn(a, b)
        return a
    return run


# =============================================================================================
# FINDINGS: silently wrong values
# =============================================================================================

def test_unfold_view_in_place_write_is_lost_on_cuda():
    """x.unfold(1, 2, 2).mul_(2) doubles x on cpu (unfold is a view); on cuda x is unchanged (the view was a copy)."""
    cpu, dev = on_both(in_place(lambda a, b: a.unfold(1, 2, 2).mul_(2)), A, B)
    assert_same(dev, cpu)


@pytest.mark.parametrize("dtype, expected", [(torch.float16, 3000.0), (torch.bfloat16, 3008.0)])
def test_low_precision_sum_over_leading_axis_accumulates_in_low_precision(dtype, expected):
    """ones(3000, 2).sum(0) is 3000 (bf16: 3008) on cpu; on cuda the column sum saturates at 2048 (bf16: 256)."""
    x = torch.ones(3000, 2, dtype=dtype)
    assert x.sum(0).tolist() == [expected, expected]
    assert x.cuda().sum(0).cpu().tolist() == [expected, expected]


def test_half_bias_gradient_saturates_on_cuda():
    """the float16 gradient of a bias added to 3000 rows is 3000 on cpu; on cuda it is 2048 (a column sum in half)."""
    grads = []
    for device in ("cpu", "cuda"):
        b = torch.zeros(2, dtype=torch.float16, device=device, requires_grad=True)
        (torch.ones(3000, 2, dtype=torch.float16, device=device) + b).sum().backward()
        grads.append(b.grad.cpu().tolist())
    assert grads[0] == [3000.0, 3000.0]
    assert grads[1] == grads[0]


def test_gradient_accumulation_on_cuda_replaces_the_grad_tensor():
    """a second backward adds into the .grad tensor in place (a held reference sees 5); on cuda .grad is a new tensor and the held one stays 2."""
    w = torch.ones(3, device="cuda", requires_grad=True)
    (w * 2).sum().backward()
    held = w.grad
    (w * 3).sum().backward()
    assert w.grad.cpu().tolist() == [5.0, 5.0, 5.0]
    assert held is w.grad and held.cpu().tolist() == [5.0, 5.0, 5.0]


# =============================================================================================
# FINDINGS: results on the wrong device
# =============================================================================================

def test_compiled_function_first_called_on_cpu_returns_cpu_tensors_for_cuda_inputs():
    """a compiled function called with cpu, then cuda inputs returns a cuda tensor; actual: cpu (signature ignores device, LLVM program reused)."""
    f = torch.compile(lambda a, b: (a @ b.t()).relu() + 1)
    x, y = torch.tensor(A), torch.tensor(B)
    expected = f(x, y)
    assert_same(f(x.cuda(), y.cuda()), expected)


def test_compiled_module_moved_to_cuda_after_compiling_returns_cpu_tensors():
    """compile(model) on cpu, then model.to('cuda'): outputs on cuda; actual: cpu (the cached cpu program runs)."""
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    compiled = torch.compile(model)
    x = torch.tensor(A)
    with torch.no_grad():
        expected = compiled(x)
        model.to("cuda")
        assert_same(compiled(x.cuda()), expected)


@pytest.mark.parametrize("name", ["clone", "times one", "float of float32"])
def test_compiled_passthrough_result_lands_on_cpu_from_the_second_call(name):
    """compiled x.clone() / x * 1 / x.float() of a cuda x: cuda on every call; actual: cpu from the second call (jit.py copies with ndarray.copy())."""
    fn = {"clone": lambda x: x.clone(), "times one": lambda x: x * 1, "float of float32": lambda x: x.float() + 0}[name]
    compiled = torch.compile(fn)
    x = torch.tensor(A).cuda()
    for _ in range(3):
        assert_same(compiled(x), fn(torch.tensor(A)))


@pytest.mark.parametrize("name", ["zeros_like", "ones on cuda"])
def test_compiled_program_without_device_inputs_returns_cpu_from_the_second_call(name):
    """compiled zeros_like(x) / ones(3, device='cuda') with cuda x: cuda on every call; actual: cpu from the second call (a program with no device input is not device-resident)."""
    fn = {"zeros_like": lambda x: torch.zeros_like(x), "ones on cuda": lambda x: torch.ones(3, device="cuda")}[name]
    compiled = torch.compile(fn)
    x = torch.tensor(A).cuda()
    for _ in range(3):
        assert compiled(x).device == CUDA


EMPTY_OPS = {
    "mul of an empty slice": lambda a: a[:0] * 2,
    "sum over an empty axis (non-empty result)": lambda a: a[:0].sum(0),
    "sum over an empty kept axis": lambda a: a[:, :0].sum(1),
    "mean of empty": lambda a: a[:0].mean(0),
    "exp of zeros(0, 3)": lambda a: torch.zeros(0, 3, device=a.device).exp(),
}


@pytest.mark.parametrize("name", sorted(EMPTY_OPS))
def test_ops_on_empty_cuda_tensors_return_cpu_tensors(name):
    """an op on an empty cuda tensor returns a cuda tensor; actual: cpu (the one-op program has no externals, so its call is not device-resident)."""
    cpu, dev = on_both(EMPTY_OPS[name], A)
    assert_same(dev, cpu)


NUMPY_HELPER_OPS = {
    "nonzero": (lambda a: (a > 0).nonzero(), A),
    "nonzero as_tuple": (lambda a: (a > 0).nonzero(as_tuple=True), A),
    "argwhere": (lambda a: torch.argwhere(a > 0), A),
    "where(cond)": (lambda a: torch.where(a > 0), A),
    "unique": (lambda a: torch.unique((a * 2).round()), A),
    "unique_consecutive": (lambda a: torch.unique_consecutive((a * 2).round()), A),
    "repeat_interleave(counts)": (lambda a: torch.repeat_interleave(torch.tensor([1, 0, 2], device=a.device)), A),
    "combinations of one element": (lambda a: torch.combinations(a[0, :1], 2), A),
    "argsort of 0-d": (lambda a: a.sum().argsort(), A),
    "max of 0-d (indices)": (lambda a: a.sum().max(0).indices, A),
    "histogram": (lambda a: torch.histogram(a, bins=3), A),
    "matrix_power 0": (lambda a: torch.linalg.matrix_power(a[:, :4], 0), A),
    "isinf of int": (lambda a: torch.isinf((a * 10).long()), A),
    "isfinite of int": (lambda a: torch.isfinite((a * 10).long()), A),
    "poisson": (lambda a: torch.poisson(a.abs() * 0), A),
}


@pytest.mark.parametrize("name", sorted(NUMPY_HELPER_OPS))
def test_numpy_helper_ops_return_cpu_tensors_for_cuda_inputs(name):
    """these ops return cuda tensors for cuda inputs; actual: cpu (they wrap numpy results with Tensor._wrap and never place them)."""
    fn, array = NUMPY_HELPER_OPS[name]
    cpu, dev = on_both(fn, array)
    assert_same(dev, cpu)


def test_deepcopy_of_cuda_tensor_and_module_lands_on_cpu():
    """copy.deepcopy keeps the device (EMA / target networks); actual: the copied tensor and parameters are on cpu."""
    x = torch.tensor(A).cuda()
    model = nn.Linear(6, 3).cuda()
    assert copy.deepcopy(x).device == CUDA
    assert copy.deepcopy(model).weight.device == CUDA


def test_pickle_round_trip_of_cuda_tensor_lands_on_cpu():
    """pickle.loads(pickle.dumps(cuda tensor)) is on cuda in PyTorch; actual: cpu."""
    x = torch.tensor(A).cuda()
    assert pickle.loads(pickle.dumps(x)).device == CUDA


def test_load_with_map_location_cuda_returns_cpu_tensors():
    """ember.load(f, map_location='cuda') gives cuda tensors; actual: map_location is validated and ignored, tensors on cpu."""
    buffer = io.BytesIO()
    torch.save({"w": torch.tensor(A)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, map_location="cuda")["w"]
    assert_same(loaded, torch.tensor(A))


def test_optimizer_load_state_dict_leaves_state_on_cpu_for_cuda_params():
    """Optimizer.load_state_dict casts the state to each param's device (PyTorch); actual: exp_avg stays on cpu, also after step()."""
    torch.manual_seed(0)
    cpu_model = nn.Linear(6, 3)
    cpu_optimizer = torch.optim.Adam(cpu_model.parameters(), lr=0.01)
    cpu_model(torch.tensor(A)).sum().backward()
    cpu_optimizer.step()
    model = nn.Linear(6, 3).to("cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    optimizer.load_state_dict(cpu_optimizer.state_dict())
    model(torch.tensor(A).cuda()).sum().backward()
    optimizer.step()
    assert optimizer.state[model.weight]["exp_avg"].device == CUDA


def test_to_integer_device_index_silently_stays_on_cpu():
    """x.to(0) and zeros(2, device=0) mean cuda:0 in PyTorch; actual: x.to(0) returns x on cpu, device=0 raises RuntimeError."""
    assert torch.zeros(2).to(0).device == CUDA
    assert torch.zeros(2, device=0).device == CUDA


def test_tensor_constructor_of_a_cuda_tensor_lands_on_cpu():
    """ember.tensor(cuda_tensor) copies on the source's device (PyTorch); actual: the copy is on cpu."""
    assert torch.tensor(torch.tensor(A).cuda()).device == CUDA


def test_backward_with_a_cpu_gradient_puts_the_grad_of_a_cuda_leaf_on_cpu():
    """y.backward(cpu gradient) for a cuda y raises in PyTorch (or the grad lands on cuda); actual: the cuda leaf's .grad is a cpu tensor."""
    w = torch.tensor(A, device="cuda", requires_grad=True)
    try:
        (w * 2).backward(torch.ones(4, 6))
    except RuntimeError:
        return
    assert w.grad.device == CUDA


# =============================================================================================
# FINDINGS: errors
# =============================================================================================

def test_numpy_force_true_raises_for_cuda_tensors():
    """x.numpy(force=True) is x.detach().cpu().numpy() in PyTorch; actual: TypeError 'can't convert cuda:0 device type tensor'."""
    x = torch.tensor(A, device="cuda", requires_grad=True)
    np.testing.assert_array_equal(x.numpy(force=True), A)


def test_tensor_of_a_list_of_cuda_scalars_raises():
    """ember.tensor([cuda 0-d, cuda 0-d]) works in PyTorch (e.g. a list of losses); actual: TypeError from __array__."""
    x = torch.tensor(A).cuda()
    assert torch.tensor([x[0, 0], x[1, 1]]).tolist() == pytest.approx([float(A[0, 0]), float(A[1, 1])])


@pytest.mark.parametrize("name", ["sort", "median"])
def test_compile_of_a_host_only_op_on_cuda_raises_host_only_error(name):
    """compiled sort/median of cuda tensors gives the eager result (eager runs them on the host); actual: HostOnlyError 'the ptx target cannot call back into Python'."""
    fn = {"sort": lambda a: a.sort(1).values * 2, "median": lambda a: torch.median(a, 1).values + 1}[name]
    compiled = torch.compile(fn)
    assert_same(compiled(torch.tensor(A).cuda()), fn(torch.tensor(A)))


def test_indexing_a_cpu_tensor_with_cuda_indices_does_not_raise():
    """cpu_tensor[cuda_index] raises RuntimeError in PyTorch ('indices should be either on cpu or on the same device'); actual: a cpu result."""
    with pytest.raises(RuntimeError):
        torch.tensor(A)[torch.tensor([0, 1]).cuda()]


def test_get_device_is_missing():
    """Tensor.get_device() is 0 for cuda and -1 for cpu tensors; actual: AttributeError."""
    assert torch.ones(2, device="cuda").get_device() == 0 and torch.ones(2).get_device() == -1


# =============================================================================================
# CHECKED, HOLDS: eager values and devices
# =============================================================================================

EAGER = {
    "transpose add": lambda a, b: a.t() + b.t(),
    "flip times": lambda a, b: a.flip(1) * b,
    "flip of a slice": lambda a, b: a.t()[1:, ::2].flip(0) * 3,
    "expand": lambda a, b: a[:1].expand(4, 6) + b,
    "slices with steps": lambda a, b: a[::2, 1::3] * 2,
    "unfold read": lambda a, b: a.unfold(1, 3, 2) * 1,
    "diagonal": lambda a, b: a.diagonal(1) + 0,
    "narrow": lambda a, b: a.narrow(1, 2, 3) + b.narrow(1, 0, 3),
    "permute reshape": lambda a, b: a.reshape(2, 2, 6).permute(2, 0, 1).reshape(6, 4) * 1,
    "reductions over dims": lambda a, b: (a.sum(1), a.t().sum(1), a.reshape(2, 2, 6).mean((0, 2)), a.amax(1),
                                          a.min(0).indices, a.std(1), a.logsumexp(1), a.cumprod(0)),
    "topk": lambda a, b: a.topk(2, 1),
    "where": lambda a, b: torch.where(a.t() > 0, b.t(), 0.0),
    "int ops": lambda a, b: ((a * 10).long() // 3, (a * 10).long() % -3, (a * 10).int() @ (b * 5).int().t()),
    "int8 and uint8 wrap": lambda a, b: ((a * 50).to(torch.int8) * 7, (a.abs() * 100).to(torch.uint8) - 200),
    "bool ops": lambda a, b: (((a > 0) & (b < 0)) | (a > b), (a > 0).sum(1), (a > 0).any(1)),
    "float64": lambda a, b: (a.double() @ b.double().t()).exp(),
    "float16": lambda a, b: (a.half() * b.half(), a.half().sum(1), a.half() @ b.half().t()),
    "bfloat16": lambda a, b: a.bfloat16() + b.bfloat16(),
    "0-d": lambda a, b: a[0, 0] * b[1, 1],
    "0-d cpu operands": lambda a, b: (a + torch.tensor(2.0), a.half() * torch.tensor(1.1, dtype=torch.float64),
                                      (a * 10).long() + torch.tensor(1.5), torch.where(a > 0, a, torch.tensor(-1.0))),
    "matmul bmm einsum": lambda a, b: (a.t() @ b, torch.bmm(a.reshape(2, 2, 6), b.reshape(2, 6, 2)),
                                       torch.einsum("ij,kj->ik", a, b)),
    "cat stack split chunk": lambda a, b: (torch.cat([a.t(), b.t()], 1), torch.stack([a[::2], b[1::2]], 2),
                                           [t * 1 for t in a.split([2, 4], 1)], [t + 1 for t in a.chunk(3, 1)]),
    "cuda index tensors": lambda a, b: (a[torch.tensor([3, 0, 0]).to(a.device)],
                                        a[torch.tensor([-1, 0]).to(a.device), torch.tensor([1, 5]).to(a.device)],
                                        a[1:, torch.tensor([0, 2]).to(a.device)], a[a > 0],
                                        a.index_select(1, torch.tensor([5, 0]).to(a.device))),
    "cross_entropy": lambda a, b: (F.cross_entropy(a, torch.tensor([0, 5, 2, 1]).to(a.device), label_smoothing=0.1),
                                   F.cross_entropy(a, torch.tensor([0, -100, 2, 1]).to(a.device))),
    "embedding layer_norm dropout-eval": lambda a, b: (F.embedding(torch.tensor([[0, 3], [2, 2]]).to(a.device), a),
                                                       F.layer_norm(a, (6,), b[0], b[1]),
                                                       F.dropout(a, 0.5, training=False)),
    "nan handling": lambda a, b: (torch.where(a > 1, float("nan"), a).max(1).values,
                                  torch.where(a > 1, float("nan"), a).argmax(1)),
}


@pytest.mark.parametrize("name", sorted(EAGER))
def test_eager_ops_and_views_on_cuda_match_cpu(name):
    cpu, dev = on_both(EAGER[name], A, B)
    assert_same(dev, cpu)


IN_PLACE = {
    "transpose add_": lambda a, b: a.t().add_(1),
    "row of a transpose mul_": lambda a, b: a.t()[1].mul_(5),
    "step slice mul_": lambda a, b: a[::2].mul_(2),
    "flip add_": lambda a, b: a.flip(1).add_(b),
    "index assignment": lambda a, b: a.__setitem__(torch.tensor([0, 2]).to(a.device), b[:2]),
    "index assignment of a cpu value": lambda a, b: a.__setitem__(0, torch.arange(6.0)),
    "mask assignment": lambda a, b: a.__setitem__(b > 0, b[b > 0]),
    "masked_fill_ through a view": lambda a, b: a.t().masked_fill_(b.t() > 0, -1.0),
    "copy_ into a strided view": lambda a, b: a[:, :4].t().copy_(b[:, :4].t().flip(0)),
    "copy_ of a host source into a view": lambda a, b: a[::2].copy_(torch.ones(2, 6)),
    "copy_ of itself flipped": lambda a, b: a.copy_(a.flip(1)),
    "overlapping add_": lambda a, b: a[:, 1:].add_(a[:, :-1]),
    "diagonal fill_": lambda a, b: a.diagonal().fill_(0),
    "index_add_ with duplicates": lambda a, b: a.index_add_(0, torch.tensor([0, 0, 3]).to(a.device), b[:3]),
    "index_put_ accumulate": lambda a, b: a.index_put_((torch.tensor([0, 0]).to(a.device),), b[:2], accumulate=True),
}


@pytest.mark.parametrize("name", sorted(IN_PLACE))
def test_in_place_ops_through_views_on_cuda_match_cpu(name):
    cpu, dev = on_both(in_place(IN_PLACE[name]), A, B)
    assert_same(dev, cpu)


def test_cross_device_copies_and_in_place_ops_keep_the_target_device():
    target = torch.tensor(A)
    target[:, ::2].copy_(torch.tensor(B).cuda()[:, 1::2])
    expected = A.copy()
    expected[:, ::2] = B[:, 1::2]
    assert target.device == torch.device("cpu")
    np.testing.assert_allclose(target.numpy(), expected)


def test_conv_pooling_and_norm_layers_on_cuda_match_cpu():
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    cpu, dev = on_both(lambda x, w: (F.conv2d(x, w, stride=2, dilation=2, padding=2),
                                     F.conv2d(x.permute(0, 1, 3, 2), w), F.max_pool2d(x, 3, 2, 1),
                                     F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
                                     F.adaptive_avg_pool2d(x, (3, 3)), F.group_norm(x, 3)), x, w)
    assert_same(dev, cpu)
    torch.manual_seed(0)
    bn_cpu = nn.BatchNorm2d(3)
    bn_dev = copy.deepcopy(bn_cpu).to("cuda")
    assert_same(bn_dev(torch.tensor(x).cuda()), bn_cpu(torch.tensor(x)))
    assert_same(bn_dev.running_var, bn_cpu.running_var)
    assert bn_dev.num_batches_tracked.device == CUDA


def test_results_keep_device_through_likes_casts_clone_and_printing():
    x = torch.tensor(A).cuda()
    made = [x.clone(), x.detach(), x.t().contiguous(), x.to(torch.float64), x.t().to(torch.int32), x.half(),
            x.new_zeros(2, dtype=torch.int64), x.new_empty(2), torch.empty_like(x), torch.full_like(x, 3, dtype=torch.int32),
            torch.randint_like(x, 5), x.to(torch.arange(2, device="cuda"))]
    assert all(t.device == CUDA for t in made)
    assert x.to(device="cpu", dtype=torch.float64).device == torch.device("cpu")
    assert x.t().tolist() == torch.tensor(A).t().tolist() and isinstance(x.sum().item(), float)
    assert repr(torch.ones(2, device="cuda", requires_grad=True)) == "tensor([1., 1.], device='cuda:0', requires_grad=True)"
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
        np.asarray(x)


def test_errors_on_cuda_are_the_cpu_errors():
    for device in ("cpu", "cuda"):
        x = torch.tensor(A, device=device)
        with pytest.raises(IndexError):
            x[torch.tensor([10], device=device)]
        with pytest.raises(IndexError):
            F.cross_entropy(x, torch.tensor([0, 1, 2, 9], device=device))
        with pytest.raises(RuntimeError, match="leaf Variable"):
            torch.ones(3, device=device, requires_grad=True).add_(1)
        a = torch.ones(4, device=device, requires_grad=True)
        b = a * 2
        c = b * b
        b[::2].mul_(3)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            c.sum().backward()
    with pytest.raises(RuntimeError, match="cuda:1"):
        torch.randn(2, device="cuda:1")


# =============================================================================================
# CHECKED, HOLDS: autograd across devices
# =============================================================================================

def autograd_cases(device):
    out = {}
    w = torch.tensor(A, requires_grad=True)  # a cpu leaf moved to the device, backward twice
    y = (w.to(device).t() @ torch.tensor(B).to(device)).tanh().sum()
    y.backward(retain_graph=True)
    y.backward()
    out["cpu leaf through .to"] = w.grad
    v = torch.tensor(A, device=device, requires_grad=True)  # a device leaf moved to the cpu
    (v.cpu() * 2).exp().sum().backward()
    out["device leaf through .cpu"] = v.grad.to(device)
    u = torch.tensor(A, device=device, requires_grad=True)  # create_graph double backward
    g, = torch.autograd.grad((u ** 3).sum(), u, create_graph=True)
    g.sum().backward()
    out["double backward"] = (g, u.grad)
    h = torch.tensor(A, device=device, requires_grad=True)  # a hook that changes the gradient
    h.register_hook(lambda grad: grad * 2)
    h.sin().sum().backward()
    out["hook"] = h.grad
    p = torch.tensor(A, device=device, requires_grad=True)  # in-place ops through views of a non-leaf
    q = p * 1
    q[::2].mul_(3)
    q.t()[0].add_(1)
    (q * q).sum().backward()
    out["in-place through views"] = p.grad
    k = torch.tensor(A, device=device, requires_grad=True)
    (k.flip(0)[torch.tensor([0, 0, 2]).to(device)] ** 2).sum().backward()
    (k.unfold(1, 3, 1) ** 2).sum().backward()
    out["index, flip and unfold"] = k.grad
    m = torch.tensor(A, device=device, requires_grad=True)
    F.cross_entropy(m, torch.tensor([0, 5, 2, 1]).to(device), label_smoothing=0.2).backward()
    out["cross_entropy"] = m.grad
    aa = torch.tensor(A, device=device, requires_grad=True)
    bb = torch.tensor(A, device=device, requires_grad=True)
    out["materialized unused"] = torch.autograd.grad((aa * 2).sum(), [aa, bb], materialize_grads=True)[1]
    return out


def test_autograd_across_devices_matches_cpu():
    on_cpu, on_dev = autograd_cases("cpu"), autograd_cases("cuda")
    assert on_dev["cpu leaf through .to"].device == torch.device("cpu")
    np.testing.assert_allclose(on_dev.pop("cpu leaf through .to").numpy(), on_cpu.pop("cpu leaf through .to").numpy(),
                               rtol=1e-5)
    for key in on_cpu:
        assert_same(on_dev[key], on_cpu[key])


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam"])
def test_eager_optimizers_on_cuda_keep_state_there_and_match_cpu(name):
    results = {}
    for device in ("cpu", "cuda"):
        w = torch.tensor(A, device=device, requires_grad=True)
        kwargs = {"SGD": {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, "AdamW": {"amsgrad": True},
                  "RMSprop": {"momentum": 0.5}}.get(name, {})
        optimizer = getattr(torch.optim, name)([w], lr=0.01, **kwargs)
        target = torch.tensor(B).to(device)

        def closure():
            optimizer.zero_grad()
            loss = (w * target).pow(2).sum()
            loss.backward()
            return loss
        for _ in range(2):
            optimizer.step(closure)
        results[device] = (w, optimizer.state[w])
    assert_same(results["cuda"][0], results["cpu"][0])
    for key, value in results["cuda"][1].items():
        if isinstance(value, torch.Tensor) and value.ndim:
            assert value.device == CUDA, key


def test_clip_grad_norm_and_state_dict_round_trips_on_cuda():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).cuda()
    F.cross_entropy(model(torch.tensor(A).cuda()), torch.tensor([0, 2, 1, 1]).cuda()).backward()
    grads = [p.grad.cpu().numpy() for p in model.parameters()]
    norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    assert norm.device == CUDA
    total = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    np.testing.assert_allclose(norm.item(), total, rtol=1e-5)
    assert all(p.grad.device == CUDA for p in model.parameters())
    state = model.state_dict()
    assert all(t.device == CUDA for t in state.values())
    on_cpu = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    on_cpu.load_state_dict(state)  # values copied into the cpu model's own tensors
    assert all(t.device == torch.device("cpu") for t in on_cpu.state_dict().values())
    back = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).cuda()
    back.load_state_dict(on_cpu.state_dict())
    for (key, a), (_, b) in zip(state.items(), back.state_dict().items()):
        np.testing.assert_array_equal(host(b), host(a))
        assert b.device == CUDA, key
    model.zero_grad(set_to_none=False)
    assert all(p.grad.device == CUDA and p.grad.abs().sum().item() == 0 for p in model.parameters())


# =============================================================================================
# CHECKED, HOLDS: ember.compile with cuda tensors
# =============================================================================================

class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)  # (no bias before BatchNorm: its gradient is rounding noise)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


def test_compiled_training_step_with_adamw_clipping_and_batchnorm_follows_eager_cpu():
    rng = np.random.default_rng(5)
    batches = [(torch.tensor(rng.standard_normal((2, 2, 8, 8)).astype(np.float32)), torch.tensor(rng.integers(0, 4, 2)))
               for _ in range(3)]
    results = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = ConvNet().to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)

        def step(x, y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            return loss, norm
        run = torch.compile(step) if device == "cuda" else step
        losses = [run(x.to(device), y.to(device)) for x, y in batches]
        model.eval()
        evaluate = torch.compile(model) if device == "cuda" else model
        with torch.no_grad():
            evaluated = [evaluate(batches[0][0].to(device)) for _ in range(2)][-1]
        results[device] = (model, optimizer, losses, evaluated, run)
    (model_cpu, _, losses_cpu, eval_cpu, _), (model_dev, optimizer_dev, losses_dev, eval_dev, compiled) = \
        results["cpu"], results["cuda"]
    assert compiled.report.calls - compiled.report.eager_calls >= 2 and "ptx" in compiled.report.backend
    for on_dev, on_cpu in zip(losses_dev, losses_cpu):
        assert_same(list(on_dev), list(on_cpu))
    assert_same(eval_dev, eval_cpu)
    for (key, on_cpu), (_, on_dev) in zip(model_cpu.state_dict().items(), model_dev.state_dict().items()):
        assert_same(on_dev, on_cpu)
    for p in model_dev.parameters():
        assert p.grad.device == CUDA
        assert all(v.device == CUDA for v in optimizer_dev.state[p].values() if v.ndim)


def test_compiled_sgd_momentum_step_with_batchnorm1d_follows_eager_cpu():
    results = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        step = training_step(model, optimizer)
        run = torch.compile(step) if device == "cuda" else step
        losses = [run(torch.tensor(A).to(device) * k, torch.tensor([0, 2, 1, 1]).to(device)) for k in (1.0, 0.5, 2.0)]
        results[device] = (model, optimizer, losses)
    for on_dev, on_cpu in zip(results["cuda"][2], results["cpu"][2]):
        assert_same(on_dev, on_cpu)
    for (key, on_cpu), (_, on_dev) in zip(results["cpu"][0].state_dict().items(), results["cuda"][0].state_dict().items()):
        assert_same(on_dev, on_cpu)
    model, optimizer = results["cuda"][:2]
    assert all(optimizer.state[p]["momentum_buffer"].device == CUDA for p in model.parameters())


COMPILED = {
    "in-place on an input": lambda x, y: x.add_(1).sum(),
    "in-place through a step view": lambda x, y: x[::2].mul_(2).sum(),
    "in-place through a transposed view": lambda x, y: (x.t()[1:].add_(y.t()[1:]), y * 2)[1],
    "masked_fill_": lambda x, y: x.masked_fill_(y > 0, 0.0) * 1,
    "returns a view of an input": lambda x, y: x.t(),
    "a closed-over cpu constant": lambda x, y: x + torch.ones(6),
    "flips and steps": lambda x, y: x.flip(0)[:, ::2] * y[:, 1::2],
    "half and float64": lambda x, y: ((x.half() * y.half()).sum(1), (x.double() @ y.double().t()).exp()),
    "integers": lambda x, y: ((x * 10).long() // 3) % 4,
    "a guard on item()": lambda x, y: x * 2 if y.sum().item() > 0 else x * 3,
    "boolean mask": lambda x, y: x[x > 0].sum(),
}


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_compiled_functions_on_cuda_match_eager_cpu_including_mutations(name):
    fn = COMPILED[name]
    x_cpu, y_cpu = torch.tensor(A), torch.tensor(B)
    x_dev, y_dev = torch.tensor(A).cuda(), torch.tensor(B).cuda()
    compiled = torch.compile(fn)
    for _ in range(2):
        assert_same(compiled(x_dev, y_dev), fn(x_cpu, y_cpu))
    assert_same(x_dev, x_cpu)
    assert_same(y_dev, y_cpu)


def test_compiled_function_called_on_cuda_then_cpu_gives_cpu_results():
    f = torch.compile(lambda a, b: (a @ b.t()).relu() + 1)
    x, y = torch.tensor(A), torch.tensor(B)
    expected = (x @ y.t()).relu() + 1
    assert_same(f(x.cuda(), y.cuda()), expected)
    on_cpu = f(x, y)
    assert on_cpu.device == torch.device("cpu")
    np.testing.assert_allclose(on_cpu.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_a_move_inside_a_compiled_training_step_runs_eagerly_and_follows_cpu():
    torch.manual_seed(0)
    model_cpu = nn.Linear(6, 3)
    model_dev = copy.deepcopy(model_cpu)
    model_dev.to("cuda")
    opt_cpu = torch.optim.Adam(model_cpu.parameters(), lr=0.01, weight_decay=0.1)
    opt_dev = torch.optim.Adam(model_dev.parameters(), lr=0.01, weight_decay=0.1)

    def step_dev(x, y):
        opt_dev.zero_grad()
        loss = F.cross_entropy(model_dev(x.to("cuda")), y.to("cuda"))
        loss.backward()
        opt_dev.step()
        return loss

    def step_cpu(x, y):
        opt_cpu.zero_grad()
        loss = F.cross_entropy(model_cpu(x), y)
        loss.backward()
        opt_cpu.step()
        return loss
    compiled = torch.compile(step_dev)
    x, y = torch.tensor(A), torch.tensor([0, 1, 2, 1])
    for _ in range(3):
        assert_same(compiled(x, y), step_cpu(x, y))
    assert_same(model_dev.weight, model_cpu.weight)
    assert compiled.report.eager_calls >= 2
