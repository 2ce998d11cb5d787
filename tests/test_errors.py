"""Bad input raises errors written for people: each names the op and the shapes or dtypes
involved (`matmul: shapes f32[2,3] and f32[4,5] cannot be multiplied (3 != 4)`), and the
autograd errors use PyTorch's key phrases so users can search for them.
"""
import re

import pytest

import ember
from ember.ops import PRIMITIVES, OpError

CONV = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)


def raises(error_type, *phrases):
    """pytest.raises for an error whose message contains every phrase (literally)."""
    return pytest.raises(error_type, match="(?s)" + "".join(f"(?=.*{re.escape(p)})" for p in phrases))


# ----------------------------------------------------------------------------- shape errors

def test_matmul_shape_mismatch_names_both_shapes():
    with raises(RuntimeError, "matmul", "f32[2,3]", "f32[4,5]", "3 != 4"):
        ember.zeros(2, 3) @ ember.zeros(4, 5)
    with raises(RuntimeError, "matmul", "f32[3]", "f32[2]"):  # the user's 1-d shapes, not unsqueezed ones
        ember.zeros(3) @ ember.zeros(2)
    with raises(RuntimeError, "matmul", "batch dims", "f32[2,2,3]", "f32[3,3,4]"):
        ember.zeros(2, 2, 3) @ ember.zeros(3, 3, 4)
    with raises(RuntimeError, "mm", "self must be a 2D tensor", "[2, 2, 2]"):
        ember.mm(ember.zeros(2, 2, 2), ember.zeros(2, 2))
    with raises(RuntimeError, "matmul", "at least 1 dimension", "0D"):
        ember.matmul(ember.tensor(1.0), ember.zeros(2))


def test_matmul_error_is_an_op_error_with_its_parts():
    with pytest.raises(OpError) as caught:
        PRIMITIVES["matmul"].bind(ember.zeros(2, 3), ember.zeros(4, 5))
    assert caught.value.op == "matmul" and "f32[2,3]" in caught.value.detail


def test_conv2d_channel_mismatch_names_input_and_weight():
    with raises(RuntimeError, "conv2d", "input f32[1,4,8,8] has 4 channels", "weight [2, 3, 3, 3] expects 3"):
        PRIMITIVES["conv2d"].bind(ember.zeros(1, 4, 8, 8), ember.zeros(2, 3, 3, 3), **CONV)
    with raises(RuntimeError, "conv2d", "has 4 channels", "expects 6", "2 groups of 3"):
        PRIMITIVES["conv2d"].bind(ember.zeros(1, 4, 8, 8), ember.zeros(2, 3, 3, 3), **{**CONV, "groups": 2})
    with raises(RuntimeError, "conv2d", "kernel 3x3", "larger than the padded input f32[1,3,2,2]"):
        PRIMITIVES["conv2d"].bind(ember.zeros(1, 3, 2, 2), ember.zeros(2, 3, 3, 3), **CONV)
    with raises(RuntimeError, "conv2d", "one dtype", "f32[1,3,8,8]", "f64[2,3,3,3]"):
        PRIMITIVES["conv2d"].bind(ember.zeros(1, 3, 8, 8), ember.zeros(2, 3, 3, 3, dtype=ember.float64), **CONV)
    with raises(RuntimeError, "conv2d", "4-d input and weight", "f32[3,8,8]"):
        PRIMITIVES["conv2d"].bind(ember.zeros(3, 8, 8), ember.zeros(2, 3, 3, 3), **CONV)


def test_impossible_view_and_reshape_name_the_shape_and_the_input():
    with raises(RuntimeError, "view", "shape [4, 2] is invalid for input f32[2,3] of size 6"):
        ember.zeros(2, 3).view(4, 2)
    with raises(RuntimeError, "reshape", "shape [-1, 4] is invalid for input f32[2,3] of size 6"):
        ember.zeros(2, 3).reshape(-1, 4)
    with raises(RuntimeError, "view", "only one dimension can be inferred", "[-1, -1]"):
        ember.zeros(2, 3).view(-1, -1)
    with raises(RuntimeError, "reshape", "shape [7] is invalid for input f32[2,3]"):
        PRIMITIVES["reshape"].bind(ember.zeros(2, 3), shape=(7,))


def test_non_broadcastable_shapes_name_both_operands():
    with raises(RuntimeError, "add", "f32[2,3]", "f32[4]", "not broadcastable"):
        ember.zeros(2, 3) + ember.zeros(4)
    with raises(RuntimeError, "broadcast_to", "cannot expand f32[2,3] to shape [3, 3]"):
        ember.zeros(2, 3).expand(3, 3)
    with raises(RuntimeError, "where", "not broadcastable"):
        ember.where(ember.zeros(2, dtype=ember.bool), ember.zeros(3), ember.zeros(3))


def test_movement_errors_name_the_op_and_shapes():
    with raises(RuntimeError, "concat", "must match except in dim 0", "f32[2,3]", "f32[2]"):
        ember.cat([ember.zeros(2, 3), ember.zeros(2)])
    with raises(RuntimeError, "permute", "[0]", "2 dims", "[2, 3]"):
        ember.zeros(2, 3).permute(0)
    with raises(RuntimeError, "permute", "not a permutation", "f32[2,3]"):
        ember.zeros(2, 3).permute(0, 0)
    with raises(IndexError, "sum", "dim 2 is out of range for a tensor of 2 dims"):
        ember.zeros(2, 3).sum(2)
    with raises(IndexError, "unsqueeze", "Dimension out of range", "got 4"):
        ember.zeros(1, 3).unsqueeze(4)
    with raises(RuntimeError, "stack expects each tensor to be equal size", "[2]", "[3]"):
        ember.stack([ember.zeros(2), ember.zeros(3)])


def test_dtype_errors_name_the_op_and_dtypes():
    with raises(RuntimeError, "where", "condition must be bool", "f32[2]"):
        PRIMITIVES["where"].bind(ember.zeros(2), ember.zeros(2), ember.zeros(2))
    with raises(RuntimeError, "add", "one dtype", "f32[2]", "f64[2]"):
        PRIMITIVES["add"].bind(ember.zeros(2), ember.zeros(2, dtype=ember.float64))
    with raises(RuntimeError, "exp", "floating-point operand", "i64[2]"):
        PRIMITIVES["exp"].bind(ember.tensor([1, 2]))
    with raises(RuntimeError, "take", "index must be an integer tensor", "f32[1]"):
        PRIMITIVES["take"].bind(ember.zeros(3), ember.zeros(1), axis=0)
    with raises(TypeError, "complex128", "supported"):
        ember.tensor(__import__("numpy").array([1j]))
    with raises(TypeError, "unsupported operand type str"):
        ember.zeros(2) + "a"


def test_ragged_data_is_refused_with_its_outline():
    with raises(ValueError, "ember.tensor", "rectangular", "[[int, int], [int]]"):
        ember.tensor([[1, 2], [3]])


# ----------------------------------------------------------------------------- indexing errors

@pytest.mark.parametrize("requires_grad", [False, True], ids=["eager", "recording"])
def test_index_out_of_range_names_the_dimension_size_and_shape(requires_grad):
    x = ember.zeros(2, 3, requires_grad=requires_grad)
    with raises(IndexError, "index 5 is out of bounds for dimension 0 with size 2", "shape [2, 3]"):
        x[5]
    with raises(IndexError, "index -4 is out of bounds for dimension 1 with size 3", "shape [2, 3]"):
        x[:, -4]
    with raises(IndexError, "index 3 is out of bounds for dimension 1 with size 3", "shape [2, 3]"):
        x[:, ember.tensor([0, 3])]
    with raises(IndexError, "indices", "shape [2, 3]"):
        x[ember.tensor([0.5])]


def test_index_assignment_out_of_range():
    with raises(IndexError, "index 4 is out of bounds for dimension 0 with size 3", "assigning into", "[3]"):
        ember.zeros(3)[4] = 1.0
    y = ember.zeros(3, requires_grad=True) * 1.0
    with raises(IndexError, "index 4 is out of bounds for dimension 0 with size 3", "assigning into"):
        y[ember.tensor([4])] = 1.0


def test_index_primitives_check_their_indices():
    with raises(IndexError, "index 3 is out of bounds for dim 0 with size 3"):
        ember.zeros(3).index_select(0, ember.tensor([3]))
    with raises(RuntimeError, "gather", "index i64[3,1] does not fit input f32[2,3] along dim 1"):
        ember.zeros(2, 3).gather(1, ember.tensor([[0], [1], [2]]))


# ----------------------------------------------------------------------------- autograd errors

def test_backward_twice_without_retain_graph():
    x = ember.ones(3, requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="(?i)trying to backward through the graph a second time") as caught:
        y.backward()
    # (named after the node whose saved values are gone: the sum saved none, the product its number)
    assert "MulBackward0" in str(caught.value) and "retain_graph=True" in str(caught.value)


def test_backward_of_a_non_scalar_needs_a_gradient():
    y = ember.ones(3, requires_grad=True).exp()
    with raises(RuntimeError, "grad can be implicitly created only for scalar outputs", "[3]"):
        y.backward()
    with raises(RuntimeError, "backward", "gradient has shape [2]", "output has shape [3]"):
        y.backward(ember.ones(2))


def test_backward_of_a_tensor_without_history():
    with raises(RuntimeError, "does not require grad and does not have a grad_fn"):
        ember.zeros(2).sum().backward()


def test_inplace_on_a_leaf_that_requires_grad():
    w = ember.ones(3, requires_grad=True)
    with raises(RuntimeError, "a leaf Variable that requires grad is being used in an in-place operation",
                "add_", "[3]", "float32"):
        w.add_(1)
    with raises(RuntimeError, "a leaf Variable that requires grad is being used in an in-place operation",
                "index assignment"):
        w[0] = 2.0
    with raises(RuntimeError, "a leaf Variable that requires grad"):
        w += 1
    assert w.tolist() == [1.0, 1.0, 1.0]


def test_overwriting_a_saved_input_in_place_is_caught_by_its_version():
    x = ember.ones(3, requires_grad=True)
    h = x * 2
    y = h * h  # saves h
    with ember.no_grad():
        h.add_(1)  # writes h's memory (a recorded in-place op would rebind h and keep the old value)
    with raises(RuntimeError, "one of the variables needed for gradient computation has been modified by an "
                "inplace operation", "[ember.FloatTensor [3]]", "MulBackward0", "is at version 1",
                "expected version 0"):
        y.sum().backward()


def test_overwriting_a_saved_output_under_no_grad_is_caught():
    x = ember.ones(3, requires_grad=True)
    y = (x * 2).exp()  # exp's VJP reads its output
    with ember.no_grad():
        y.mul_(2)  # writes the very memory exp saved
    with raises(RuntimeError, "has been modified by an inplace operation", "ExpBackward0"):
        y.sum().backward()


def test_requires_grad_needs_a_floating_point_tensor():
    with raises(RuntimeError, "only Tensors of floating point dtype can require gradients", "int64"):
        ember.tensor([1, 2], requires_grad=True)
    with raises(RuntimeError, "only Tensors of floating point dtype can require gradients", "bool"):
        ember.tensor([True]).requires_grad_()
    with raises(RuntimeError, "only change requires_grad flags of leaf variables"):
        (ember.ones(2, requires_grad=True) * 2).requires_grad_(False)


def test_grad_of_an_unused_input():
    x, unused = ember.ones(1, requires_grad=True), ember.ones(1, requires_grad=True)
    with raises(RuntimeError, "input 1", "appears to not have been used in the graph", "allow_unused=True"):
        ember.autograd.grad((x * 2).sum(), [x, unused])


def test_numpy_item_and_bool_explain_themselves():
    with raises(RuntimeError, "Can't call numpy() on Tensor that requires grad", "detach()"):
        ember.zeros(2, requires_grad=True).numpy()
    with raises(RuntimeError, "a Tensor with 2 elements cannot be converted to Scalar"):
        ember.zeros(2).item()
    with raises(RuntimeError, "Boolean value of Tensor with more than one value is ambiguous", "[2]"):
        bool(ember.zeros(2))


# ----------------------------------------------------------------------------- in-place casting

def test_inplace_result_that_cannot_be_cast_to_the_destination():
    x = ember.tensor([1, 2])
    with raises(RuntimeError, "add_", "result type ember.float32 can't be cast to the desired output type "
                "ember.int64"):
        x.add_(1.5)
    with raises(RuntimeError, "__itruediv__", "can't be cast", "ember.int64"):
        x /= 2
    with raises(RuntimeError, "add_", "result type ember.int64 can't be cast", "ember.bool"):
        ember.tensor([True]).add_(1)
    with raises(RuntimeError, "add_", "output with shape [3] doesn't match the broadcast shape [2, 3]"):
        ember.zeros(3).add_(ember.zeros(2, 3))
    assert x.tolist() == [1, 2]


def test_integer_division_by_zero():
    with raises(RuntimeError, "floor_divide", "i64[2]", "division by zero"):
        ember.tensor([1, 2]) // 0


def test_unknown_primitive_lists_the_known_ones():
    with raises(KeyError, "unknown primitive 'nope'", "matmul"):
        ember.ops.get("nope")
