"""ember.nn: Module mechanics, state dicts, torch-identical reprs, module-path errors, layer
forwards against independent numpy references, and every layer's gradients (inputs and
parameters) against float64 finite differences."""
import copy
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import ember
from ember import nn
import ember.nn.functional as F
from ember.frontend.dispatch import STATE
from gradcheck import check_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def t64(array, requires_grad=False):
    return ember.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


class Net(nn.Module):
    """The seed program's network."""

    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(ember.relu(self.conv1(x)))
        x = self.pool(ember.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = ember.relu(self.fc1(x))
        x = ember.relu(self.fc2(x))
        return self.fc3(x)


SEED_NET_SUMMARY = """Net(
  (conv1): Conv2d(3, 6, kernel_size=(5, 5), stride=(1, 1))
  (pool): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  (conv2): Conv2d(6, 16, kernel_size=(5, 5), stride=(1, 1))
  (fc1): Linear(in_features=400, out_features=120, bias=True)
  (fc2): Linear(in_features=120, out_features=84, bias=True)
  (fc3): Linear(in_features=84, out_features=10, bias=True)
)"""


# ============================================================================ Parameter

def test_parameter_shares_the_array_and_prints_like_torch():
    source = ember.tensor([1.0, 2.0])
    p = nn.Parameter(source)
    assert isinstance(p, ember.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.is_leaf
    assert p._data is source._data
    assert repr(p) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    frozen = nn.Parameter(ember.zeros(2), requires_grad=False)
    assert repr(frozen) == "Parameter containing:\ntensor([0., 0.])"


def test_parameter_works_with_ops_and_accumulates_grad():
    p = nn.Parameter(ember.tensor([1.0, -2.0, 3.0]))
    loss = (p * p).sum() + ember.relu(p).mean() + p[1]
    loss.backward()
    np.testing.assert_allclose(p.grad.numpy(), 2 * np.array([1, -2, 3]) + np.array([1, 0, 1]) / 3 + [0, 1, 0],
                               rtol=1e-6)
    assert type(p * 2) is ember.Tensor


def test_parameter_deepcopy_copies_data_and_stays_a_parameter():
    p = nn.Parameter(ember.tensor([1.0, 2.0]))
    q = copy.deepcopy(p)
    assert isinstance(q, nn.Parameter) and q.requires_grad
    assert q._data is not p._data and np.array_equal(q.numpy(force=True), p.numpy(force=True))


def test_integer_parameter_cannot_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        nn.Parameter(ember.tensor([1, 2]))
    assert not nn.Parameter(ember.tensor([1, 2]), requires_grad=False).requires_grad


# ============================================================================ Module mechanics

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.scale = nn.Parameter(ember.ones(4))
        self.register_buffer("steps", ember.zeros(1))
        self.register_buffer("scratch", ember.zeros(2), persistent=False)

    def forward(self, x):
        return self.fc(x) * self.scale


def test_setattr_registers_parameters_modules_and_buffers():
    block = Block()
    assert [n for n, _ in block.named_parameters()] == ["scale", "fc.weight", "fc.bias"]
    assert [n for n, _ in block.named_buffers()] == ["steps", "scratch"]
    assert [n for n, _ in block.named_children()] == ["fc"]
    assert [n for n, _ in block.named_modules()] == ["", "fc"]
    assert block.fc is block._modules["fc"] and block.scale is block._parameters["scale"]
    assert len(list(block.parameters(recurse=False))) == 1
    assert [n for n, _ in block.named_parameters(prefix="model")][0] == "model.scale"
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'missing'"):
        block.missing


def test_assigning_wrong_kinds_raises_like_torch():
    block = Block()
    with pytest.raises(TypeError, match="cannot assign 'ember.FloatTensor' as parameter 'scale'"):
        block.scale = ember.ones(4)
    with pytest.raises(TypeError, match="cannot assign 'int' as child module 'fc'"):
        block.fc = 3
    with pytest.raises(TypeError, match="as buffer 'steps'"):
        block.steps = [1]
    block.scale = None
    assert block.scale is None and "scale" not in dict(block.named_parameters())
    block.steps = ember.ones(1)
    assert float(block.steps) == 1.0


def test_attribute_changing_kind_moves_between_tables_and_delattr():
    block = Block()
    block.extra = nn.Linear(1, 1)
    block.extra = nn.Parameter(ember.zeros(1))
    assert "extra" in block._parameters and "extra" not in block._modules
    del block.extra
    assert "extra" not in block._parameters
    del block.fc
    assert [n for n, _ in block.named_children()] == []
    with pytest.raises(KeyError, match="attribute 'forward' already exists"):
        block.register_buffer("forward", ember.zeros(1))
    with pytest.raises(KeyError, match='contain "."'):
        block.add_module("a.b", nn.ReLU())


def test_shared_parameters_and_modules_are_listed_once():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    model.add_module("again", model[0])
    assert len(list(model.parameters())) == 2
    assert [n for n, _ in model.named_modules()] == ["", "0", "1"]
    assert len(list(model.named_parameters(remove_duplicate=False))) == 4


def test_get_submodule_parameter_and_buffer():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    assert isinstance(model.get_submodule("0.1"), nn.BatchNorm1d)
    assert model.get_parameter("0.0.bias").shape == (3,)
    assert model.get_buffer("0.1.running_var").shape == (3,)
    with pytest.raises(AttributeError, match="has no attribute `9`"):
        model.get_submodule("0.9")


def test_train_eval_zero_grad_apply_requires_grad():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert model[1].training
    model(ember.randn(4, 2)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Dropout", "BatchNorm1d", "Sequential"]
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())


def test_train_goes_through_overridden_child_train():
    class Frozen(nn.Module):
        def train(self, mode=True):
            return super().train(False)  # e.g. a frozen batchnorm stays in eval

    model = nn.Sequential(nn.Linear(1, 1), nn.Sequential(Frozen()))
    model.train()
    assert model.training and model[0].training and model[1].training and not model[1][0].training


def test_double_keeps_parameter_objects_and_skips_integer_buffers():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    weight = model[0].weight
    model(ember.randn(4, 2)).sum().backward()
    assert model.double() is model
    assert model[0].weight is weight and weight.dtype is ember.float64 and weight.requires_grad
    assert weight.grad.dtype is ember.float64
    assert model[1].running_mean.dtype is ember.float64
    assert model[1].num_batches_tracked.dtype is ember.int64
    model.to(ember.float32)
    assert weight.dtype is ember.float32
    assert model.to("cpu") is model
    with pytest.raises(TypeError, match="floating point"):
        model.to(ember.int64)


def test_forward_hooks_and_pre_hooks():
    layer = nn.Linear(2, 2)
    calls = []
    pre = layer.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    post = layer.register_forward_hook(lambda m, args, out: calls.append(out.shape) or out + 1)
    out = layer(ember.randn(3, 2))
    np.testing.assert_allclose(out.detach().numpy(), (layer.bias + 1).detach().numpy()[None].repeat(3, 0),
                               rtol=1e-6)
    assert calls == [(3, 2)]
    pre.remove()
    post.remove()
    x = ember.randn(3, 2)
    np.testing.assert_allclose(layer(x).detach().numpy(), F.linear(x, layer.weight, layer.bias).detach().numpy())


def test_module_without_forward_names_itself():
    class Empty(nn.Module):
        pass
    with pytest.raises(NotImplementedError, match=r'Module \[Empty\] is missing the required "forward"'):
        Empty()(1)


# ============================================================================ state dicts

def test_state_dict_order_detached_and_non_persistent_excluded():
    block = Block()
    state = block.state_dict()
    assert list(state.keys()) == ["scale", "steps", "fc.weight", "fc.bias"]
    assert all(not v.requires_grad for v in state.values())
    assert state["fc.weight"]._data is block.fc.weight._data
    kept = block.state_dict(keep_vars=True)
    assert kept["scale"] is block.scale


def test_load_state_dict_round_trip_copies_in_place():
    source, target = Net(), Net()
    weight = target.fc1.weight
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target.fc1.weight is weight
    x = ember.randn(2, 3, 32, 32)
    np.testing.assert_array_equal(target(x).detach().numpy(), source(x).detach().numpy())


def test_load_state_dict_strict_errors_use_torchs_format():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    state = model.state_dict()
    del state["0.bias"]
    state["1.extra"] = ember.zeros(1)
    state["2.weight"] = ember.zeros(1)
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(state)
    assert str(error.value) == (
        'Error(s) in loading state_dict for Sequential:\n'
        '\tMissing key(s) in state_dict: "0.bias". \n'
        '\tUnexpected key(s) in state_dict: "2.weight", "1.extra". ')
    result = model.load_state_dict(state, strict=False)
    assert result == (["0.bias"], ["2.weight", "1.extra"])  # the root's keys first, as in torch
    assert result.missing_keys == ["0.bias"]


def test_load_state_dict_size_mismatch_message():
    net = Net()
    state = net.state_dict()
    state["fc1.weight"] = ember.zeros(120, 500)
    with pytest.raises(RuntimeError) as error:
        net.load_state_dict(state, strict=False)
    assert str(error.value) == (
        "Error(s) in loading state_dict for Net:\n\tsize mismatch for fc1.weight: copying a param with shape "
        "ember.Size([120, 500]) from checkpoint, the shape in current model is ember.Size([120, 400]).")


def test_batchnorm_state_dict_has_buffers():
    assert list(nn.BatchNorm2d(4).state_dict().keys()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert list(nn.BatchNorm1d(4, affine=False, track_running_stats=False).state_dict()) == []


def test_deepcopy_of_a_module_is_independent():
    net = Net()
    net(ember.randn(1, 3, 32, 32))  # fills the name cache
    clone = copy.deepcopy(net)
    assert clone.fc1.weight is not net.fc1.weight
    with ember.no_grad():
        clone.fc1.weight.zero_()
    assert float(net.fc1.weight.abs().sum()) > 0
    seen = []
    clone.fc1.register_forward_pre_hook(lambda m, a: seen.append(STATE.module_path[-1]))
    clone(ember.randn(1, 3, 32, 32))
    assert seen == ["fc1"]


# ============================================================================ reprs

def test_seed_net_summary_matches_torch():
    assert repr(Net()) == SEED_NET_SUMMARY


def test_layer_reprs_match_torch():
    expected = {
        nn.Linear(400, 120): "Linear(in_features=400, out_features=120, bias=True)",
        nn.Linear(3, 2, bias=False): "Linear(in_features=3, out_features=2, bias=False)",
        nn.Conv2d(3, 6, 5): "Conv2d(3, 6, kernel_size=(5, 5), stride=(1, 1))",
        nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=2, groups=2, bias=False):
            "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2), groups=2, bias=False)",
        nn.Conv2d(3, 3, 3, padding="same", padding_mode="reflect"):
            "Conv2d(3, 3, kernel_size=(3, 3), stride=(1, 1), padding=same, padding_mode=reflect)",
        nn.Conv1d(3, 5, 3, padding=1): "Conv1d(3, 5, kernel_size=(3,), stride=(1,), padding=(1,))",
        nn.MaxPool2d(2, 2): "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)",
        nn.MaxPool2d(3): "MaxPool2d(kernel_size=3, stride=3, padding=0, dilation=1, ceil_mode=False)",
        nn.MaxPool1d(3, 2): "MaxPool1d(kernel_size=3, stride=2, padding=0, dilation=1, ceil_mode=False)",
        nn.AvgPool2d(2): "AvgPool2d(kernel_size=2, stride=2, padding=0)",
        nn.AvgPool1d(3, 2): "AvgPool1d(kernel_size=(3,), stride=(2,), padding=(0,))",
        nn.AdaptiveAvgPool2d((1, 1)): "AdaptiveAvgPool2d(output_size=(1, 1))",
        nn.BatchNorm2d(16): "BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)",
        nn.BatchNorm1d(8, momentum=None, affine=False):
            "BatchNorm1d(8, eps=1e-05, momentum=None, affine=False, bias=False, track_running_stats=True)",
        nn.LayerNorm(10): "LayerNorm((10,), eps=1e-05, elementwise_affine=True, bias=True)",
        nn.GroupNorm(2, 4): "GroupNorm(2, 4, eps=1e-05, affine=True, bias=True)",
        nn.Dropout(): "Dropout(p=0.5, inplace=False)",
        nn.Dropout2d(0.2): "Dropout2d(p=0.2, inplace=False)",
        nn.ReLU(): "ReLU()",
        nn.ReLU(inplace=True): "ReLU(inplace=True)",
        nn.LeakyReLU(): "LeakyReLU(negative_slope=0.01)",
        nn.LeakyReLU(0.2, inplace=True): "LeakyReLU(negative_slope=0.2, inplace=True)",
        nn.ELU(): "ELU(alpha=1.0)",
        nn.GELU(): "GELU(approximate='none')",
        nn.GELU("tanh"): "GELU(approximate='tanh')",
        nn.SiLU(): "SiLU()",
        nn.Sigmoid(): "Sigmoid()",
        nn.Tanh(): "Tanh()",
        nn.Softplus(): "Softplus(beta=1.0, threshold=20.0)",
        nn.Softmax(dim=1): "Softmax(dim=1)",
        nn.LogSoftmax(dim=-1): "LogSoftmax(dim=-1)",
        nn.Hardtanh(): "Hardtanh(min_val=-1.0, max_val=1.0)",
        nn.PReLU(): "PReLU(num_parameters=1)",
        nn.Flatten(): "Flatten(start_dim=1, end_dim=-1)",
        nn.Unflatten(1, (2, 5)): "Unflatten(dim=1, unflattened_size=(2, 5))",
        nn.Identity(): "Identity()",
        nn.CrossEntropyLoss(): "CrossEntropyLoss()",
        nn.MSELoss(): "MSELoss()",
    }
    for module, text in expected.items():
        assert repr(module) == text


def test_container_reprs_indent_and_compress_like_torch():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
    assert repr(model) == ("Sequential(\n"
                           "  (0): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))\n"
                           "  (1): Sequential(\n"
                           "    (0): ReLU()\n"
                           "    (1): Linear(in_features=2, out_features=2, bias=True)\n"
                           "  )\n"
                           ")")
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)] + [nn.ReLU(), nn.Linear(2, 2)])
    assert repr(layers) == ("ModuleList(\n"
                            "  (0-2): 3 x Linear(in_features=2, out_features=2, bias=True)\n"
                            "  (3): ReLU()\n"
                            "  (4): Linear(in_features=2, out_features=2, bias=True)\n"
                            ")")
    assert repr(nn.ModuleList()) == "ModuleList()"
    assert repr(nn.ModuleDict({"act": nn.Tanh()})) == "ModuleDict(\n  (act): Tanh()\n)"


def test_extra_repr_multiline_and_custom():
    class Custom(nn.Module):
        def extra_repr(self):
            return "a=1\nb=2"
    assert repr(Custom()) == "Custom(\n  a=1\n  b=2\n)"


def test_seed_example_prints_summary_and_output():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "seed_net.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(SEED_NET_SUMMARY + "\ntensor([[")
    assert result.stdout.rstrip().endswith("grad_fn=<AddmmBackward0>)")  # (as PyTorch prints it)
    values = result.stdout[len(SEED_NET_SUMMARY):].split("[[")[1].split("]]")[0]
    assert len(values.replace("\n", " ").split(",")) == 10


# ============================================================================ containers

def test_sequential_indexing_slicing_append_and_delete():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(model) == 3 and isinstance(model[-1], nn.Linear)
    head = model[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is model[0]
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]
    model.append(nn.Sigmoid())
    assert list(model._modules) == ["0", "1", "2", "3"]
    del model[1]
    assert list(model._modules) == ["0", "1", "2"] and isinstance(model[1], nn.Linear)
    model.insert(1, nn.Tanh())
    assert isinstance(model[1], nn.Tanh)
    assert model(ember.randn(5, 2)).shape == (5, 1)
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert named.fc is named[0]
    with pytest.raises(IndexError):
        model[10]


def test_module_list_and_dict_register_their_members():
    layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    layers.append(nn.Linear(2, 1))
    layers += [nn.ReLU()]
    assert len(layers) == 4 and len(list(layers.parameters())) == 6
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    table = nn.ModuleDict({"a": nn.Linear(1, 1)})
    table["b"] = nn.ReLU()
    assert list(table.keys()) == ["a", "b"] and "b" in table and len(table) == 2
    del table["a"]
    assert list(table) == ["b"]
    params = nn.ParameterList([nn.Parameter(ember.zeros(2)), ember.ones(3)])
    assert len(list(params.parameters())) == 2 and isinstance(params[1], nn.Parameter)


# ============================================================================ module path

def test_call_pushes_qualified_names_and_restores_on_error():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv2 = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.conv2(x)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Sequential(Inner())

        def forward(self, x):
            return self.layer1(x)

    model = Outer()
    seen = []
    model.layer1[0].conv2.register_forward_pre_hook(lambda m, a: seen.append(list(STATE.module_path)))
    model(ember.randn(1, 2, 3, 3))
    assert seen == [["Outer", "layer1", "layer1.0", "layer1.0.conv2"]]
    assert STATE.module_path == []
    with pytest.raises(Exception, match=r"conv2d \(layer1\.0\.conv2\)"):
        model(ember.randn(1, 5, 3, 3))
    assert STATE.module_path == []


def test_name_cache_follows_tree_changes():
    model = nn.Sequential(nn.Linear(2, 2))
    names = []
    probe = nn.Identity()
    probe.register_forward_pre_hook(lambda m, a: names.append(STATE.module_path[-1]))
    model.append(probe)
    model(ember.randn(1, 2))
    model.add_module("late", nn.Sequential(probe))
    del model[1]  # Sequential renumbers: "late" becomes "1"
    model(ember.randn(1, 2))
    assert names == ["1", "1.0"]


def test_conv_channel_mismatch_names_op_module_and_shapes():
    net = Net()
    with pytest.raises(RuntimeError) as error:
        net(ember.randn(1, 4, 32, 32))
    message = str(error.value)
    assert "conv2d" in message and "conv1" in message
    assert "f32[1,4,32,32]" in message and "[6, 3, 5, 5]" in message
    assert STATE.module_path == []


def test_linear_feature_mismatch_names_the_module():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2))
    with pytest.raises(RuntimeError, match=r"\(1\).*3 features.*expects 5"):
        net(ember.randn(2, 4))


# ============================================================================ numpy references: convolution

def conv2d_reference(x, w, b, stride, padding, dilation, groups):
    n, c, h, width = x.shape
    o, cg, kh, kw = w.shape
    ph, pw = padding
    xp = np.zeros((n, c, h + 2 * ph, width + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + width] = x
    oh = (h + 2 * ph - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width + 2 * pw - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    per_group = o // groups
    for bi in range(n):
        for oc in range(o):
            g = oc // per_group
            for i in range(oh):
                for j in range(ow):
                    total = 0.0
                    for ci in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                total += (xp[bi, g * cg + ci, i * stride[0] + u * dilation[0],
                                             j * stride[1] + v * dilation[1]] * w[oc, ci, u, v])
                    out[bi, oc, i, j] = total + (b[oc] if b is not None else 0.0)
    return out


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    ((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 1), 1), ((1, 2), (2, 1), (2, 1), 2), ((2, 2), (1, 1), (1, 2), 4)])
def test_conv2d_matches_direct_loops(stride, padding, dilation, groups):
    x, w, b = rand(2, 4, 7, 6), rand(4, 4 // groups, 3, 2, seed=1), rand(4, seed=2)
    got = F.conv2d(t64(x), t64(w), t64(b), stride, padding, dilation, groups)
    np.testing.assert_allclose(got.numpy(), conv2d_reference(x, w, b, stride, padding, dilation, groups),
                               rtol=1e-10, atol=1e-12)


def test_conv2d_same_padding_asymmetric_and_valid():
    x, w = rand(1, 2, 5, 6), rand(3, 2, 4, 3, seed=1)
    got = F.conv2d(t64(x), t64(w), padding="same", dilation=(1, 2))
    # total padding d*(k-1): height 3 -> (1, 2), width 4 -> (2, 2); torch puts the extra on the high side
    padded = np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 2)))
    np.testing.assert_allclose(got.numpy(), conv2d_reference(padded, w, None, (1, 1), (0, 0), (1, 2), 1),
                               rtol=1e-10, atol=1e-12)
    assert got.shape == (1, 3, 5, 6)
    assert F.conv2d(t64(x), t64(w), padding="valid").shape == (1, 3, 2, 4)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(2, 3, 3, stride=2, padding="same")


def test_conv1d_matches_direct_loops_and_unbatched_input():
    x, w, b = rand(2, 4, 9), rand(6, 2, 3, seed=1), rand(6, seed=2)
    got = F.conv1d(t64(x), t64(w), t64(b), stride=2, padding=1, dilation=2, groups=2)
    ref = conv2d_reference(x[:, :, None], w[:, :, None], b, (1, 2), (0, 1), (1, 2), 2)[:, :, 0]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    layer = nn.Conv2d(4, 3, 3).double()
    single = layer(t64(rand(4, 6, 6)))
    np.testing.assert_allclose(single.detach().numpy(), layer(t64(rand(1, 4, 6, 6))).detach().numpy()[0])


def test_conv2d_padding_modes_pad_before_convolving():
    x = rand(1, 1, 4, 4)
    layer = nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False).double()
    w = layer.weight.detach().numpy()
    ref = conv2d_reference(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge"), w, None, (1, 1), (0, 0),
                           (1, 1), 1)
    np.testing.assert_allclose(layer(t64(x)).detach().numpy(), ref, rtol=1e-10)
    for mode, np_mode in (("reflect", "reflect"), ("circular", "wrap")):
        np.testing.assert_allclose(F.pad(t64(x), (2, 1, 1, 2), mode=mode).numpy(),
                                   np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)), mode=np_mode))


def test_conv2d_same_padding_with_circular_mode():
    x = rand(1, 1, 5, 6)
    layer = nn.Conv2d(1, 1, (2, 3), padding="same", padding_mode="circular", bias=False).double()
    w = layer.weight.detach().numpy()
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (1, 1)), mode="wrap")  # height total 1 goes high
    np.testing.assert_allclose(layer(t64(x)).detach().numpy(),
                               conv2d_reference(padded, w, None, (1, 1), (0, 0), (1, 1), 1), rtol=1e-10)


def test_layer_norm_without_bias_registers_no_bias():
    ln = nn.LayerNorm(4, bias=False)
    assert list(ln.state_dict()) == ["weight"] and ln.bias is None
    assert ln(ember.randn(2, 4)).shape == (2, 4)


# ============================================================================ numpy references: pooling

def pool_out(size, k, s, p, d, ceil_mode):
    span = d * (k - 1) + 1
    out = (size + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool_reference(x, k, s, p, d, ceil_mode):
    h, w = x.shape[-2:]
    oh, ow = pool_out(h, k[0], s[0], p[0], d[0], ceil_mode), pool_out(w, k[1], s[1], p[1], d[1], ceil_mode)
    out = np.full(x.shape[:-2] + (oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            for u in range(k[0]):
                for v in range(k[1]):
                    r, c = i * s[0] - p[0] + u * d[0], j * s[1] - p[1] + v * d[1]
                    if 0 <= r < h and 0 <= c < w:
                        out[..., i, j] = np.maximum(out[..., i, j], x[..., r, c])
    return out


def avg_pool_reference(x, k, s, p, ceil_mode, count_include_pad):
    h, w = x.shape[-2:]
    oh, ow = pool_out(h, k[0], s[0], p[0], 1, ceil_mode), pool_out(w, k[1], s[1], p[1], 1, ceil_mode)
    out = np.zeros(x.shape[:-2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s[0] - p[0], j * s[1] - p[1]
            r1, c1 = min(r0 + k[0], h + p[0]), min(c0 + k[1], w + p[1])
            size = (r1 - r0) * (c1 - c0)
            r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
            total = x[..., r0:r1, c0:c1].sum(axis=(-2, -1))
            out[..., i, j] = total / (size if count_include_pad else (r1 - r0) * (c1 - c0))
    return out


@pytest.mark.parametrize("k,s,p,d,ceil_mode", [
    ((2, 2), (2, 2), (0, 0), (1, 1), False), ((3, 3), (2, 2), (1, 1), (1, 1), True),
    ((2, 3), (2, 2), (0, 1), (1, 1), True), ((3, 2), (2, 1), (1, 0), (2, 1), False),
    ((2, 2), (3, 3), (1, 1), (1, 1), True)])
def test_max_pool2d_matches_reference(k, s, p, d, ceil_mode):
    x = rand(2, 3, 7, 8)
    got = F.max_pool2d(t64(x), k, s, p, d, ceil_mode)
    np.testing.assert_allclose(got.numpy(), max_pool_reference(x, k, s, p, d, ceil_mode))


def test_ceil_mode_output_sizes_match_torch():
    assert F.max_pool2d(ember.randn(1, 1, 5, 5), 2, 2, ceil_mode=True).shape == (1, 1, 3, 3)
    assert F.max_pool2d(ember.randn(1, 1, 6, 6), 3, 2, 1, ceil_mode=True).shape == (1, 1, 4, 4)
    # the last window would start inside the right padding: dropped
    assert F.max_pool2d(ember.randn(1, 1, 4, 4), 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)


@pytest.mark.parametrize("k,s,p,ceil_mode,count_include_pad", [
    ((2, 2), (2, 2), (0, 0), False, True), ((3, 3), (2, 2), (1, 1), True, True),
    ((3, 3), (2, 2), (1, 1), True, False), ((3, 2), (2, 3), (1, 1), False, False)])
def test_avg_pool2d_matches_reference(k, s, p, ceil_mode, count_include_pad):
    x = rand(2, 2, 7, 8)
    got = F.avg_pool2d(t64(x), k, s, p, ceil_mode, count_include_pad)
    np.testing.assert_allclose(got.numpy(), avg_pool_reference(x, k, s, p, ceil_mode, count_include_pad),
                               rtol=1e-12)


def test_pool1d_and_adaptive_pooling():
    x = rand(2, 3, 9)
    np.testing.assert_allclose(F.max_pool1d(t64(x), 3, 2, 1).numpy(),
                               max_pool_reference(x[:, :, None], (1, 3), (1, 2), (0, 1), (1, 1), False)[:, :, 0])
    np.testing.assert_allclose(F.avg_pool1d(t64(x), 2).numpy(), (x[..., 0:8:2] + x[..., 1:8:2]) / 2)
    y = rand(2, 3, 7, 5)
    got = F.adaptive_avg_pool2d(t64(y), (3, 2)).numpy()
    for i in range(3):
        for j in range(2):
            r0, r1 = (i * 7) // 3, -((-(i + 1) * 7) // 3)
            c0, c1 = (j * 5) // 2, -((-(j + 1) * 5) // 2)
            np.testing.assert_allclose(got[..., i, j], y[..., r0:r1, c0:c1].mean(axis=(-2, -1)))
    np.testing.assert_allclose(F.adaptive_avg_pool2d(t64(y), 1).numpy(), y.mean(axis=(-2, -1), keepdims=True))
    np.testing.assert_allclose(F.adaptive_max_pool2d(t64(y), (3, 2)).numpy()[..., 2, 1],
                               y[..., 4:7, 2:5].max(axis=(-2, -1)))


def test_pool_padding_larger_than_half_kernel_is_rejected():
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        F.max_pool2d(ember.randn(1, 1, 4, 4), 2, padding=2)


# ============================================================================ numpy references: normalization

def test_batchnorm_training_normalizes_and_updates_running_stats():
    bn = nn.BatchNorm2d(3).double()
    with ember.no_grad():
        bn.weight.copy_(t64([1.0, 2.0, 0.5]))
        bn.bias.copy_(t64([0.0, 1.0, -1.0]))
    x = rand(4, 3, 5, 6) * 2 + 1
    out = bn(t64(x)).detach().numpy()
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    ref = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    ref = ref * np.array([1, 2, 0.5])[:, None, None] + np.array([0, 1, -1])[:, None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    n = 4 * 5 * 6
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var * n / (n - 1), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    x2 = rand(2, 3, 5, 6, seed=3)
    expected = (x2 - bn.running_mean.numpy()[:, None, None]) / np.sqrt(bn.running_var.numpy()[:, None, None] + 1e-5)
    expected = expected * np.array([1, 2, 0.5])[:, None, None] + np.array([0, 1, -1])[:, None, None]
    np.testing.assert_allclose(bn(t64(x2)).detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    assert int(bn.num_batches_tracked) == 1


def test_batchnorm_cumulative_average_when_momentum_is_none():
    bn = nn.BatchNorm1d(2, momentum=None).double()
    batches = [rand(5, 2, seed=s) for s in range(3)]
    for b in batches:
        bn(t64(b))
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean([b.mean(0) for b in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), np.mean([b.var(0, ddof=1) for b in batches], axis=0),
                               rtol=1e-12)
    assert int(bn.num_batches_tracked) == 3


def test_batchnorm_without_running_stats_and_errors():
    bn = nn.BatchNorm1d(3, track_running_stats=False, affine=False).double().eval()
    x = rand(6, 3, 4)
    ref = (x - x.mean(axis=(0, 2), keepdims=True)) / np.sqrt(x.var(axis=(0, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(bn(t64(x)).numpy(), ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nn.BatchNorm1d(3)(ember.randn(1, 3))
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(ember.randn(2, 3))
    assert not nn.BatchNorm2d(3).running_mean.requires_grad


def test_layer_norm_and_group_norm_match_numpy():
    x = rand(3, 4, 5)
    ln = nn.LayerNorm((4, 5)).double()
    with ember.no_grad():
        ln.weight.copy_(t64(rand(4, 5, seed=1)))
        ln.bias.copy_(t64(rand(4, 5, seed=2)))
    mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    ref = (x - mean) / np.sqrt(var + 1e-5) * rand(4, 5, seed=1) + rand(4, 5, seed=2)
    np.testing.assert_allclose(ln(t64(x)).detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    gn = nn.GroupNorm(2, 4).double()
    grouped = x.reshape(3, 2, 10)
    ref = ((grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + 1e-5))
    np.testing.assert_allclose(gn(t64(x)).detach().numpy(), ref.reshape(3, 4, 5), rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="normalized_shape"):
        nn.LayerNorm(3)(ember.randn(2, 4))


# ============================================================================ dropout

def test_dropout_masks_scale_and_follow_the_seed():
    x = ember.ones(200, 50)
    ember.manual_seed(5)
    first = F.dropout(x, 0.3).numpy()
    ember.manual_seed(5)
    np.testing.assert_array_equal(first, F.dropout(x, 0.3).numpy())
    assert set(np.unique(first)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((first == 0).mean() - 0.3) < 0.02
    layer = nn.Dropout(0.3).eval()
    assert layer(x) is x
    assert float(F.dropout(x, 1.0).abs().sum()) == 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_dropout2d_zeroes_whole_channels():
    out = F.dropout2d(ember.ones(8, 16, 3, 3), 0.5).numpy()
    per_channel = out.reshape(8, 16, 9)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))
    assert 0 < (per_channel == 0).all(-1).sum() < 128


# ============================================================================ activations

ACTIVATIONS = [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.ReLU6(), lambda x: np.clip(x, 0, 6)),
    (nn.LeakyReLU(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    (nn.ELU(0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x))),
    (nn.GELU(), lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    (nn.SiLU(), lambda x: x / (1 + np.exp(-x))),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.Tanh(), np.tanh),
    (nn.Softplus(beta=2.0, threshold=3.0), lambda x: np.where(2 * x > 3, x, np.log1p(np.exp(2 * x)) / 2)),
    (nn.Mish(), lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    (nn.Hardswish(), lambda x: x * np.clip(x + 3, 0, 6) / 6),
    (nn.Softsign(), lambda x: x / (1 + np.abs(x))),
    (nn.LogSigmoid(), lambda x: -np.log1p(np.exp(-x))),
    (nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    (nn.LogSoftmax(dim=1), lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
]


@pytest.mark.parametrize("module,reference", ACTIVATIONS, ids=lambda v: repr(v) if isinstance(v, nn.Module) else "")
def test_activation_matches_numpy_and_gradcheck(module, reference):
    x = rand(3, 4, 2) * 3
    np.testing.assert_allclose(module(t64(x)).numpy(), reference(x), rtol=1e-10, atol=1e-12)
    check_module(module, [x])


def test_softmax_is_stable_for_large_inputs():
    x = ember.tensor([[1000.0, 1001.0], [-1000.0, -1000.0]])
    np.testing.assert_allclose(F.softmax(x, 1).numpy(), [[0.26894142, 0.73105858], [0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(F.log_softmax(x, 1).numpy(), [[-1.3132616, -0.3132616], [-0.6931472] * 2],
                               rtol=1e-6)
    assert np.isfinite(F.softplus(ember.tensor([1e4])).numpy()).all()


def test_inplace_activation_writes_the_input():
    x = ember.tensor([-1.0, 2.0])
    out = nn.ReLU(inplace=True)(x)
    assert out is x and x.tolist() == [0.0, 2.0]


# ============================================================================ gradients of every layer

LAYERS = [
    ("linear", lambda: nn.Linear(4, 3), [(2, 4)]),
    ("linear_3d_no_bias", lambda: nn.Linear(4, 3, bias=False), [(2, 2, 4)]),
    ("bilinear", lambda: nn.Bilinear(3, 2, 2), [(2, 3), (2, 2)]),
    ("conv2d", lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1), [(2, 2, 5, 5)]),
    ("conv2d_groups_dilation", lambda: nn.Conv2d(4, 2, (2, 3), dilation=(2, 1), groups=2), [(1, 4, 6, 5)]),
    ("conv2d_same", lambda: nn.Conv2d(2, 2, 2, padding="same"), [(1, 2, 4, 4)]),
    ("conv2d_reflect", lambda: nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), [(1, 1, 4, 4)]),
    ("conv1d", lambda: nn.Conv1d(2, 3, 3, stride=2, padding=2), [(2, 2, 7)]),
    ("maxpool2d_ceil", lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), [(1, 2, 6, 5)]),
    ("maxpool2d_dilated", lambda: nn.MaxPool2d(2, 1, dilation=2), [(1, 1, 5, 5)]),
    ("maxpool1d", lambda: nn.MaxPool1d(2), [(2, 2, 6)]),
    ("avgpool2d", lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), [(1, 2, 6, 5)]),
    ("avgpool1d", lambda: nn.AvgPool1d(3, 2, 1), [(1, 2, 7)]),
    ("adaptive_avg", lambda: nn.AdaptiveAvgPool2d((2, 3)), [(1, 2, 5, 7)]),
    ("adaptive_avg_divisible", lambda: nn.AdaptiveAvgPool2d(2), [(1, 2, 4, 4)]),
    ("adaptive_max", lambda: nn.AdaptiveMaxPool2d((2, 3)), [(1, 2, 5, 7)]),
    ("batchnorm1d_train", lambda: nn.BatchNorm1d(3), [(4, 3)]),
    ("batchnorm2d_train", lambda: nn.BatchNorm2d(2), [(3, 2, 2, 3)]),
    ("batchnorm2d_eval", lambda: _eval(nn.BatchNorm2d(2)), [(3, 2, 2, 3)]),
    ("layernorm", lambda: nn.LayerNorm((3, 2)), [(2, 3, 2)]),
    ("groupnorm", lambda: nn.GroupNorm(2, 4), [(2, 4, 3)]),
    ("dropout", lambda: nn.Dropout(0.4), [(3, 5)]),
    ("dropout2d", lambda: nn.Dropout2d(0.4), [(2, 3, 2, 2)]),
    ("prelu", lambda: nn.PReLU(3), [(2, 3, 2)]),
    ("hardtanh", lambda: nn.Hardtanh(-0.5, 0.5), [(3, 4)]),
    ("flatten_unflatten", lambda: nn.Sequential(nn.Flatten(), nn.Unflatten(1, (3, 2))), [(2, 3, 2)]),
    ("seed_like_stack", lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                              nn.Linear(8, 3), nn.Tanh()), [(2, 1, 6, 6)]),
]


def _eval(module):
    with ember.no_grad():
        module.running_mean.copy_(ember.tensor([0.3, -0.2]))
        module.running_var.copy_(ember.tensor([1.5, 0.7]))
        module.weight.copy_(ember.tensor([1.2, 0.8]))
        module.bias.copy_(ember.tensor([0.1, -0.4]))
    return module.eval()


@pytest.mark.parametrize("name,make,shapes", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_layer_gradients_match_finite_differences(name, make, shapes):
    ember.manual_seed(0)
    module = make()
    with ember.no_grad():  # non-trivial affine parameters
        for p in module.parameters():
            p.add_(ember.randn(*p.shape) * 0.3)
    check_module(module, [rand(*shape, seed=i + 1) for i, shape in enumerate(shapes)])


# ============================================================================ functional extras

def test_linear_pad_one_hot_normalize_cosine_similarity():
    x, w, b = rand(2, 3), rand(4, 3, seed=1), rand(4, seed=2)
    np.testing.assert_allclose(F.linear(t64(x), t64(w), t64(b)).numpy(), x @ w.T + b)
    y = rand(2, 3, 4)
    np.testing.assert_allclose(F.pad(t64(y), (1, 2, 0, 1), value=5.0).numpy(),
                               np.pad(y, ((0, 0), (0, 1), (1, 2)), constant_values=5.0))
    np.testing.assert_allclose(F.pad(t64(y), (-1, 1)).numpy(), np.pad(y[..., 1:], ((0, 0), (0, 0), (0, 1))))
    hot = F.one_hot(ember.tensor([2, 0, 1]), 4)
    assert hot.dtype is ember.int64 and hot.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    assert F.one_hot(ember.tensor([1, 3])).shape == (2, 4)
    np.testing.assert_allclose(F.normalize(t64(x)).numpy(), x / np.linalg.norm(x, axis=1, keepdims=True))
    z = rand(2, 3, seed=4)
    cos = (x * z).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(z, axis=1)
    np.testing.assert_allclose(F.cosine_similarity(t64(x), t64(z)).numpy(), cos)


def test_functional_composites_gradcheck():
    from finite_differences import check_vjp
    check_vjp(lambda x: F.normalize(x, dim=-1), [rand(3, 4)])
    check_vjp(lambda a, b: F.cosine_similarity(a, b), [rand(3, 4), rand(3, 4, seed=1)])
    check_vjp(lambda x: F.pad(x, (1, 2, 2, 0), mode="reflect"), [rand(1, 2, 3, 4)])
    check_vjp(lambda x: F.pad(x, (1, 1), mode="replicate"), [rand(2, 3)])
    check_vjp(lambda x: F.elu(x * 50), [rand(2, 3)])  # large inputs: no inf * 0 in the VJP
    check_vjp(lambda x: F.softplus(x * 50), [rand(2, 3)])


# ============================================================================ init

def test_default_initialisation_bounds_follow_torch():
    layer = nn.Linear(400, 120)
    bound = 1 / math.sqrt(400)  # kaiming_uniform(a=sqrt(5)) gives the same bound as the bias
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
    conv = nn.Conv2d(6, 16, 5)
    assert np.abs(conv.weight.detach().numpy()).max() <= 1 / math.sqrt(150)
    bn = nn.BatchNorm2d(3)
    assert bn.weight.tolist() == [1, 1, 1] and bn.bias.tolist() == [0, 0, 0]


def test_initialisation_is_reproducible_with_manual_seed():
    ember.manual_seed(7)
    first = Net().state_dict()
    ember.manual_seed(7)
    second = Net().state_dict()
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)


def test_init_functions():
    from ember.nn import init
    assert init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    assert init.calculate_gain("tanh") == 5 / 3
    w = ember.empty(300, 200)
    assert init._calculate_fan_in_and_fan_out(ember.empty(8, 4, 3, 3)) == (36, 72)
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.std().item() - math.sqrt(2 / 300)) < 0.005
    init.xavier_uniform_(w)
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / 500)
    init.xavier_normal_(w, gain=2.0)
    assert abs(w.std().item() - 2 * math.sqrt(2 / 500)) < 0.01
    init.trunc_normal_(w, std=2.0, a=-1.0, b=1.5)
    assert w.numpy().min() >= -1.0 and w.numpy().max() <= 1.5
    q = ember.empty(4, 6)
    init.orthogonal_(q)
    np.testing.assert_allclose(q.numpy() @ q.numpy().T, np.eye(4), atol=1e-5)
    init.eye_(q)
    np.testing.assert_array_equal(q.numpy(), np.eye(4, 6))
    init.constant_(q, 0.5)
    assert q.numpy().min() == q.numpy().max() == 0.5
    p = nn.Parameter(ember.zeros(3))
    init.uniform_(p, 2.0, 3.0)
    assert p.grad_fn is None and p.requires_grad and p.numpy(force=True).min() >= 2.0


# ============================================================================ utils

def test_clip_grad_norm_and_value_and_vectors():
    a, b = nn.Parameter(ember.zeros(2)), nn.Parameter(ember.zeros(3))
    a.grad, b.grad = ember.tensor([3.0, 0.0]), ember.tensor([0.0, 4.0, 0.0])
    total = nn.utils.clip_grad_norm_([a, b], 1.0)
    assert abs(total.item() - 5.0) < 1e-6
    np.testing.assert_allclose(np.concatenate([a.grad.numpy(), b.grad.numpy()]), [0.6, 0, 0, 0.8, 0], atol=1e-6)
    total = nn.utils.clip_grad_norm_([a, b], 10.0, norm_type="inf")
    np.testing.assert_allclose(total.item(), 0.8, rtol=1e-5)
    nn.utils.clip_grad_value_([a, b], 0.5)
    np.testing.assert_allclose(b.grad.numpy(), [0, 0.5, 0], atol=1e-6)
    model = nn.Linear(2, 3)
    vector = nn.utils.parameters_to_vector(model.parameters())
    assert vector.shape == (9,)
    nn.utils.vector_to_parameters(ember.arange(9.0), model.parameters())
    assert model.bias.tolist() == [6.0, 7.0, 8.0]
