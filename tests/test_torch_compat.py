"""The compatibility surface PyTorch tutorials use, each exercised the way a script would."""
import numpy as np
import pytest

import ember as torch
from ember import nn


def test_device_selection_idiom_picks_the_cpu():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert device == torch.device("cpu") and str(device) == "cpu" and device.type == "cpu"
    assert torch.cuda.device_count() == 0
    mps = torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    assert mps.type == "cpu"
    assert torch.accelerator.is_available() is False and torch.accelerator.current_accelerator() is None
    model = nn.Linear(3, 2).to(device)
    x = torch.randn(4, 3).to(device)
    assert model(x).device == device and x.cpu() is x
    torch.backends.cudnn.deterministic = True  # scripts set it; harmless
    torch.cuda.manual_seed_all(0)


def test_variable_and_legacy_constructors():
    from ember.autograd import Variable
    v = Variable(torch.ones(2, 2), requires_grad=True)
    assert isinstance(v, torch.Tensor) and v.requires_grad
    (v * 3).sum().backward()
    assert np.array_equal(v.grad.numpy(), np.full((2, 2), 3.0))
    assert torch.FloatTensor(2, 3).shape == (2, 3) and torch.FloatTensor(2, 3).dtype == torch.float32
    assert torch.FloatTensor([1, 2]).tolist() == [1.0, 2.0]
    assert torch.LongTensor([1, 2]).dtype == torch.int64
    assert torch.Tensor(3).shape == (3,) and torch.Tensor([[1, 2]]).dtype == torch.float32


def test_default_dtype_and_device():
    try:
        torch.set_default_dtype(torch.float64)
        assert torch.tensor([1.5]).dtype == torch.float64 and torch.randn(2).dtype == torch.float64
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    assert torch.tensor([1.5]).dtype == torch.float32
    torch.set_default_device("cpu")
    with pytest.raises(RuntimeError, match="CPU"):
        torch.set_default_device("cuda")


def test_data_attribute_type_and_to():
    w = nn.Linear(2, 2).weight
    w.data = torch.zeros(2, 2)  # the classic manual re-initialisation
    assert np.array_equal(w.detach().numpy(), np.zeros((2, 2)))
    w.data.fill_(1.0)
    assert np.array_equal(w.detach().numpy(), np.ones((2, 2)))
    t = torch.tensor([1.7, -2.2])
    assert t.type() == "ember.FloatTensor" and t.type(torch.int64).dtype == torch.int64
    assert t.type("torch.DoubleTensor").dtype == torch.float64
    assert t.to(torch.float64).dtype == torch.float64 and t.to("cpu", torch.int32).dtype == torch.int32
    assert t.to(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


def test_functional_module_path_and_utils_data_attribute():
    import ember.functional as F2
    assert F2.einsum("i,i->", torch.ones(3), torch.ones(3)).item() == 3.0
    assert torch.functional.broadcast_shapes((2, 1), (1, 3)) == (2, 3)
    assert torch.utils.data.DataLoader is not None and torch.utils.data.TensorDataset is not None


def test_python_protocols():
    t = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert len(t) == 2 and [row.tolist() for row in t] == [[1.0, 2.0], [3.0, 4.0]]
    assert 3.0 in t and 7.0 not in t and torch.tensor(4.0) in t
    assert f"{t.sum():.2f}" == "10.00" and f"{torch.tensor(3):d}" == "3"
    assert t.numel() == 4 and torch.numel(t) == 4 and t.element_size() == 4 and t.nbytes == 16
    assert torch.is_tensor(t) and not torch.is_tensor(np.ones(2))


def test_comparisons_and_selection_helpers():
    a = torch.tensor([3.0, 1.0, 2.0])
    assert torch.allclose(a, a + 1e-9) and torch.equal(a, a.clone()) and not torch.equal(a, a[:2])
    values, indices = torch.topk(a, 2)
    assert values.tolist() == [3.0, 2.0] and indices.tolist() == [0, 2]
    assert torch.sort(a).values.tolist() == [1.0, 2.0, 3.0] and torch.argsort(a).tolist() == [1, 2, 0]
    assert torch.sort(a, descending=True).indices.tolist() == [0, 2, 1]
    uniques, counts = torch.unique(torch.tensor([2, 1, 2, 3]), return_counts=True)
    assert uniques.tolist() == [1, 2, 3] and counts.tolist() == [1, 2, 1]
    assert torch.cumsum(torch.tensor([1, 2, 3]), dim=0).tolist() == [1, 3, 6]
    m = torch.ones(3, 3)
    assert torch.tril(m).sum().item() == 6 and torch.triu(m, diagonal=1).sum().item() == 3
    assert torch.outer(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])).tolist() == [[3.0, 4.0], [6.0, 8.0]]
    assert torch.cross(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), dim=0).tolist() == [0, 0, 1]
    assert torch.einsum("bij,bjk->bik", torch.ones(2, 2, 3), torch.ones(2, 3, 4)).shape == (2, 2, 4)


def test_linalg_norm_and_svd():
    m = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert torch.linalg.norm(m).item() == pytest.approx(5.0)
    assert torch.linalg.norm(torch.tensor([3.0, 4.0])).item() == pytest.approx(5.0)
    u, s, vh = torch.linalg.svd(m)
    assert sorted(s.tolist()) == pytest.approx([3.0, 4.0])
    np.testing.assert_allclose((u @ torch.diag_embed(s) @ vh).numpy() if hasattr(torch, "diag_embed") else
                               u.numpy() @ np.diag(s.numpy()) @ vh.numpy(), m.numpy(), atol=1e-6)
    u2, s2, v2 = torch.svd(m)
    np.testing.assert_allclose(u2.numpy() @ np.diag(s2.numpy()) @ v2.numpy().T, m.numpy(), atol=1e-6)


def test_no_grad_decorates_generators():
    w = torch.ones(2, requires_grad=True)

    @torch.no_grad()
    def batches():
        for i in range(3):
            yield w * i

    outs = list(batches())
    assert len(outs) == 3 and not any(o.requires_grad for o in outs)
    assert (w * 2).requires_grad  # grad mode restored outside the generator


def test_autograd_function_with_save_for_backward():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.save_for_backward(x)
            ctx.scale = scale
            return x * x * scale

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 2 * x * ctx.scale, None

    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = Square.apply(x, 0.5)
    assert y.grad_fn.name() == "SquareBackward0"
    y.sum().backward()
    assert x.grad.tolist() == [1.0, -2.0, 3.0]


def test_autograd_function_with_two_outputs_and_a_custom_gradient():
    class StraightThroughRound(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.round(), x * 2

        @staticmethod
        def backward(ctx, grad_rounded, grad_doubled):
            return grad_rounded + 2 * grad_doubled  # pretend round is the identity

    x = torch.tensor([0.4, 1.6], requires_grad=True)
    rounded, doubled = StraightThroughRound.apply(x)
    (rounded.sum() + doubled.sum()).backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_custom_function_inside_compile_is_refused_not_silently_changed():
    class Identity(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, g):
            return g * 0

    compiled = torch.compile(lambda x: Identity.apply(x))
    with pytest.raises(RuntimeError, match="custom backward"):
        compiled(torch.ones(2, requires_grad=True))
