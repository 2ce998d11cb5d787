"""Tensors on a CUDA device (frontend/device_tensors.py, frontend/device_ops.py,
runtime/device_arrays.py): PyTorch's device API, eager ops as one-op GPU programs, autograd,
and compiled programs whose parameters and optimizer state stay on the device.

Without a GPU these run on the grid emulator (EMBER_EMULATE_CUDA=1), which refuses any launch
or copy given host memory, as a GPU would fault on it; with a GPU they run on it. Every value
is compared with the same computation on the CPU.
"""
import numpy as np
import pytest

import ember as torch
from ember import nn
from ember.nn import functional as F
from ember.frontend import device_ops
from ember.frontend.device_tensors import cuda_runtime_device
from ember.runtime import device_arrays
from ember.runtime.cuda_driver import CudaError, cuda_available


@pytest.fixture(autouse=True)
def cuda(monkeypatch):
    """The cuda device: the GPU when there is one, else the grid emulator."""
    if not cuda_available():
        monkeypatch.setenv("EMBER_EMULATE_CUDA", "1")
    return cuda_runtime_device()


def on_cpu(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def assert_same(on_device, on_host, rtol=1e-5, atol=1e-6):
    assert on_device.device == torch.device("cuda", 0), f"result on {on_device.device}"
    assert on_device.dtype == on_host.dtype and tuple(on_device.shape) == tuple(on_host.shape)
    np.testing.assert_allclose(on_cpu(on_device), on_cpu(on_host), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- the device API

def test_the_device_api_of_pytorch_scripts():
    assert torch.cuda.is_available() and torch.cuda.device_count() == 1 and torch.cuda.current_device() == 0
    assert isinstance(torch.cuda.get_device_name(), str) and len(torch.cuda.get_device_capability()) == 2
    assert torch.accelerator.is_available() and torch.accelerator.current_accelerator() == torch.device("cuda")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(3, 4).to(device)
    assert x.device == torch.device("cuda:0") and x.is_cuda and str(x.device) == "cuda:0"
    assert x.cpu().device == torch.device("cpu") and not x.cpu().is_cuda and x.cuda() is x and x.to("cuda") is x
    assert "device='cuda:0'" in repr(x) and "device=" not in repr(x.cpu())
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu()"):
        x.numpy()
    assert isinstance(x.sum().item(), float) and x.tolist() == x.cpu().tolist()
    y = x.to("cuda", torch.float64)
    assert y.is_cuda and y.dtype == torch.float64
    torch.cuda.synchronize()


def test_factories_and_likes_make_tensors_on_the_device():
    made = [torch.zeros(2, 3, device="cuda"), torch.ones(4, device="cuda"), torch.randn(2, device="cuda"),
            torch.arange(5, device="cuda"), torch.full((2,), 7.0, device="cuda"), torch.eye(3, device="cuda"),
            torch.tensor([1, 2], device="cuda"), torch.empty(3, device=torch.device("cuda")),
            torch.linspace(0, 1, 5, device="cuda"), torch.randint(0, 5, (3,), device="cuda")]
    assert all(t.is_cuda for t in made)
    x = torch.randn(2, 3, device="cuda")
    likes = [torch.zeros_like(x), torch.ones_like(x), torch.randn_like(x), torch.full_like(x, 2.0),
             x.new_zeros(4), x.new_ones(2, 2), x.new_full((3,), 1.5), x.new_tensor([1.0, 2.0])]
    assert all(t.is_cuda for t in likes)
    assert not torch.zeros_like(x, device="cpu").is_cuda
    np.testing.assert_array_equal(torch.arange(5, device="cuda").cpu().numpy(), np.arange(5))


def test_module_to_moves_parameters_in_place_and_back():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    weight = model[0].weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert model.to("cuda") is model and model[0].weight is weight and weight.is_cuda
    assert all(t.is_cuda for t in list(model.parameters()) + list(model.buffers()))
    model(torch.randn(5, 3, device="cuda")).sum().backward()
    optimizer.step()  # the optimizer made before the move updates the moved parameters
    assert weight.grad.is_cuda and weight.is_cuda
    model.cpu()
    assert not weight.is_cuda and not weight.grad.is_cuda


# ----------------------------------------------------------------------------- eager ops

OPS = {
    "add broadcast": lambda a, b: a + b[0],
    "mul scalar": lambda a, b: a * 2.5 - 1,
    "div": lambda a, b: a / (b.abs() + 1),
    "exp log": lambda a, b: (a.exp() + 1).log(),
    "erf tanh sigmoid": lambda a, b: torch.erf(a) + torch.tanh(b) * torch.sigmoid(a),
    "matmul": lambda a, b: a @ b.t(),
    "batched matmul": lambda a, b: a.reshape(2, 3, 4) @ b.reshape(2, 4, 3),
    "sum mean": lambda a, b: a.sum(0) + a.mean(1).sum(),
    "max argmax": lambda a, b: a.max(1).values + a.argmax(1).float(),
    "softmax": lambda a, b: F.softmax(a, dim=-1),
    "log_softmax": lambda a, b: F.log_softmax(b, dim=0),
    "layer norm": lambda a, b: F.layer_norm(a, (4,)),
    "gelu": lambda a, b: F.gelu(a),
    "transposed view": lambda a, b: a.t() * 3,
    "sliced view": lambda a, b: a[1:, ::2] + 1,
    "flipped view": lambda a, b: a.flip(0) - a,
    "expanded view": lambda a, b: a[:, :1].expand(6, 4) * b,
    "reshape of a transpose": lambda a, b: a.t().reshape(-1) * 2,
    "cat stack": lambda a, b: torch.cat([a, b], 0) + torch.stack([a, b]).sum(0).sum(),
    "where compare": lambda a, b: torch.where(a > b, a, b * 2),
    "advanced index": lambda a, b: a[torch.tensor([0, 2, 2], device=a.device)],
    "gather": lambda a, b: a.gather(1, torch.tensor([[0], [3], [1], [2], [0], [1]], device=a.device)),
    "integer ops": lambda a, b: (a * 10).to(torch.int64) // 3 % 4,
    "float64": lambda a, b: a.double() * b.double(),
    "sort (host-only)": lambda a, b: a.sort(1).values,
    "cumsum": lambda a, b: a.cumsum(1),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_eager_ops_on_cuda_tensors_give_the_cpu_results_on_the_device(name):
    rng = np.random.default_rng(0)
    a, b = (torch.tensor(rng.standard_normal((6, 4)).astype(np.float32)) for _ in range(2))
    assert_same(OPS[name](a.cuda(), b.cuda()), OPS[name](a, b))


def test_a_one_op_program_is_compiled_once_per_op_shape_and_dtype():
    x = torch.randn(5, 7, device="cuda")
    (x * x).sum()
    before = len(device_ops._PROGRAMS)
    for _ in range(3):
        (torch.randn(5, 7, device="cuda") * x).sum()
    assert len(device_ops._PROGRAMS) == before
    (torch.randn(5, 8, device="cuda") * torch.randn(5, 8, device="cuda")).sum()
    assert len(device_ops._PROGRAMS) > before


def test_in_place_ops_write_device_memory_through_views():
    host = torch.arange(12.0).reshape(3, 4)
    x = host.cuda()
    x.add_(1)
    x[1:].mul_(2)
    x.t()[0].fill_(-1)
    host.add_(1)
    host[1:].mul_(2)
    host.t()[0].fill_(-1)
    assert_same(x, host)
    x.copy_(torch.ones(3, 4))  # a host source
    assert x.is_cuda and x.sum().item() == 12.0


def test_host_operands_are_copied_to_the_device():
    x = torch.randn(3, device="cuda")
    assert (x + torch.ones(3)).is_cuda and (x * torch.tensor(2.0)).is_cuda


# ----------------------------------------------------------------------------- autograd

def test_gradients_of_cuda_tensors_stay_on_the_device_and_equal_the_cpu_ones():
    rng = np.random.default_rng(1)
    w_host = torch.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    x_host = torch.tensor(rng.standard_normal((5, 4)).astype(np.float32))
    w = w_host.detach().cuda().requires_grad_()
    for weight, x in ((w, x_host.cuda()), (w_host, x_host)):
        loss = F.cross_entropy(F.gelu(x @ weight), torch.tensor([0, 1, 2, 0, 1], device=x.device))
        loss.backward()
        (x @ weight).pow(2).mean().backward()  # accumulates into .grad
    assert_same(w.grad, w_host.grad)


def test_to_device_is_differentiable_back_to_the_source_device():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.cuda()
    assert y.grad_fn is not None and y.grad_fn.name() == "ToCopyBackward0"
    (y * y).sum().backward()
    assert not x.grad.is_cuda
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 5 * 5, 10)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


def twin_models():
    torch.manual_seed(0)
    host = SmallNet()
    device = SmallNet()
    device.load_state_dict(host.state_dict())
    return host, device.to("cuda")


def training_step(model, optimizer):
    def step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return step


def test_eager_training_on_the_device_follows_the_cpu():
    host, device = twin_models()
    steps = [training_step(m, torch.optim.Adam(m.parameters(), lr=0.01)) for m in (host, device)]
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = torch.tensor(rng.standard_normal((6, 1, 12, 12)).astype(np.float32))
        y = torch.tensor(rng.integers(0, 10, 6))
        assert_same(steps[1](x.cuda(), y.cuda()), steps[0](x, y), rtol=1e-4)
    for p_device, p_host in zip(device.parameters(), host.parameters()):
        assert_same(p_device, p_host, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- compiled programs

def test_a_compiled_training_step_keeps_its_state_on_the_device_and_copies_only_the_batch(cuda):
    host, device = twin_models()
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (host, device)]
    eager, compiled = training_step(host, optimizers[0]), torch.compile(training_step(device, optimizers[1]))
    rng = np.random.default_rng(3)
    batches = [(torch.tensor(rng.standard_normal((8, 1, 12, 12)).astype(np.float32)),
                torch.tensor(rng.integers(0, 10, 8))) for _ in range(5)]
    for x, y in batches[:4]:
        assert_same(compiled(x.cuda(), y.cuda()), eager(x, y), rtol=1e-4)
    assert compiled.report.calls - compiled.report.eager_calls >= 2
    assert "ptx" in compiled.report.backend
    state = [t for p in device.parameters() for t in (p, p.grad, optimizers[1].state[p]["momentum_buffer"])]
    assert all(t.is_cuda for t in state)
    for p_device, p_host in zip(device.parameters(), host.parameters()):
        assert_same(p_device, p_host, rtol=1e-4, atol=1e-5)
    if not getattr(cuda, "emulated", False):
        return  # (the byte counts below are the emulator's)
    x, y = batches[4]
    served = compiled.report.compiled_calls
    while compiled.report.compiled_calls == served:  # (host batches are a signature of their own: traced first)
        compiled(x, y)
    cuda.copied_in = cuda.copied_out = 0
    loss = compiled(x, y)  # a host batch: copied in, nothing else
    assert cuda.copied_in == x.numel() * 4 + y.numel() * 8
    assert cuda.copied_out < 256  # the launches' status cells only: the loss stays on the device
    assert loss.is_cuda
    cuda.copied_in = 0
    compiled(x.cuda(), y.cuda())
    assert cuda.copied_in == x.numel() * 4 + y.numel() * 8  # (the .cuda() copies; the call copies none)


def test_compiled_inference_on_the_device_returns_device_tensors():
    host, device = twin_models()
    compiled = torch.compile(device)
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert_same(compiled(x.cuda()), host(x), rtol=1e-4)


def test_the_seed_net_runs_on_the_device_eagerly_and_compiled():
    """The seed program's Net (tests/zoo.py's copy of examples/seed_net.py), batch 2: eager
    forward, an eager and a compiled training step, all on cuda, against the CPU."""
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from zoo import SeedNet
    torch.manual_seed(0)
    host = SeedNet()
    device = SeedNet()
    device.load_state_dict(host.state_dict())
    device.to("cuda")
    x = torch.randn(2, 3, 32, 32)
    y = torch.tensor([3, 7])
    assert_same(device(x.cuda()), host(x), rtol=1e-4, atol=1e-5)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (host, device)]
    eager_host, eager_device = (training_step(m, o) for m, o in zip((host, device), optimizers))
    assert_same(eager_device(x.cuda(), y.cuda()), eager_host(x, y), rtol=1e-4)
    compiled = torch.compile(eager_device)
    for _ in range(3):
        assert_same(compiled(x.cuda(), y.cuda()), eager_host(x, y), rtol=1e-4)
    assert compiled.report.compiled_calls >= 1
    for p_device, p_host in zip(device.parameters(), host.parameters()):
        assert_same(p_device, p_host, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the emulator's honesty

def test_the_emulator_refuses_host_memory_as_a_gpu_would(cuda):
    if not getattr(cuda, "emulated", False):
        pytest.skip("checks the grid emulator's address checks (a GPU faults on its own)")
    runner, inputs, output = device_ops.one_op_program(cuda, "exp", [((4,), np.float32)], {})
    with pytest.raises(CudaError, match="not device memory"):
        runner._launcher(0, [np.zeros(4, np.float32).ctypes.data] * len(runner.buffers))
    on_device = device_arrays.to_device(cuda, np.arange(4, dtype=np.float32))
    np.testing.assert_allclose(runner({inputs[0]: on_device}, {})[output], np.exp(np.arange(4, dtype=np.float32)),
                               rtol=1e-6)


def test_device_memory_is_given_back_when_the_last_view_goes(cuda):
    if not getattr(cuda, "emulated", False):
        pytest.skip("counts the grid emulator's allocations")
    before = len(cuda._memory)
    x = torch.randn(100, device="cuda")
    view = x[10:20]
    del x
    assert len(cuda._memory) == before + 1 and view.is_cuda
    del view
    assert len(cuda._memory) == before
