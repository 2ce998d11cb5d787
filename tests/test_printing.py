"""repr(tensor) character for character as PyTorch prints it (torch/_tensor_str.py), with
ember's dtype names: fixed, integer-valued and scientific float formats, ints, bools, 0-d,
empty tensors, dtype/grad suffixes, summarisation and 80-column wrapping; and __format__.
"""
import numpy as np

import ember


def shows(tensor, expected):
    assert repr(tensor) == expected
    assert str(tensor) == expected


def test_float_vector_and_matrix_use_four_decimals_and_align_signs():
    shows(ember.tensor([0.1234, -1.5, 2.0]), "tensor([ 0.1234, -1.5000,  2.0000])")
    shows(ember.tensor([[1.0, -2.0], [3.5, 4.0]]), "tensor([[ 1.0000, -2.0000],\n"
                                                   "        [ 3.5000,  4.0000]])")
    shows(ember.tensor([[0.5, 10.25], [100.125, 3.0]]), "tensor([[  0.5000,  10.2500],\n"
                                                        "        [100.1250,   3.0000]])")


def test_integer_valued_floats_print_with_a_trailing_point():
    shows(ember.tensor([1.0, 2.0]), "tensor([1., 2.])")
    shows(ember.tensor([-1.0, 20.0]), "tensor([-1., 20.])")
    shows(ember.zeros(2, 2), "tensor([[0., 0.],\n        [0., 0.]])")


def test_nonfinite_and_zero_values_do_not_widen_the_columns():
    shows(ember.tensor([float("nan"), 1.0]), "tensor([nan, 1.])")
    shows(ember.tensor([0.0, float("nan")]), "tensor([0., nan])")
    shows(ember.tensor([float("inf"), -float("inf"), 1.5]), "tensor([   inf,   -inf, 1.5000])")
    shows(ember.tensor([-0.0, 1.0]), "tensor([-0., 1.])")


def test_scientific_mode_for_wide_ranges():
    shows(ember.tensor([1e-5, 1e3]), "tensor([1.0000e-05, 1.0000e+03])")
    shows(ember.tensor([1.0, 2000.0]), "tensor([1.0000e+00, 2.0000e+03])")  # integer-valued, ratio > 1000
    shows(ember.tensor([1e8 + 16, 1.0]), "tensor([1.0000e+08, 1.0000e+00])")
    shows(ember.tensor([0.00001234]), "tensor([1.2340e-05])")  # below 1e-4
    shows(ember.tensor([123456789.0]), "tensor([1.2346e+08])")
    shows(ember.tensor([1.5, 1500.0]), "tensor([   1.5000, 1500.0000])")  # a ratio of exactly 1000 is not wide


def test_integers_bools_and_zero_d():
    shows(ember.tensor([1, -20, 300]), "tensor([  1, -20, 300])")
    shows(ember.tensor([True, False]), "tensor([ True, False])")
    shows(ember.tensor(3.5), "tensor(3.5000)")
    shows(ember.tensor(3.0), "tensor(3.)")
    shows(ember.tensor(7), "tensor(7)")
    shows(ember.tensor(True), "tensor(True)")
    shows(ember.tensor(1e-6), "tensor(1.0000e-06)")


def test_dtype_suffix_for_non_default_dtypes():
    shows(ember.tensor([1.0, 2.5], dtype=ember.float64), "tensor([1.0000, 2.5000], dtype=ember.float64)")
    shows(ember.tensor([1, 2], dtype=ember.int32), "tensor([1, 2], dtype=ember.int32)")
    shows(ember.tensor([1, 2], dtype=ember.uint8), "tensor([1, 2], dtype=ember.uint8)")
    shows(ember.tensor([1.0, 2.0], dtype=ember.float16), "tensor([1., 2.], dtype=ember.float16)")
    previous = ember.get_default_dtype()
    ember.set_default_dtype(ember.float64)
    try:
        shows(ember.tensor([1.5]), "tensor([1.5000])")
        shows(ember.tensor([1.5], dtype=ember.float32), "tensor([1.5000], dtype=ember.float32)")
    finally:
        ember.set_default_dtype(previous)


def test_empty_tensors_show_size_and_any_non_default_dtype():
    shows(ember.tensor([]), "tensor([])")
    shows(ember.zeros(0, 3), "tensor([], size=(0, 3))")
    shows(ember.tensor([], dtype=ember.int64), "tensor([], dtype=ember.int64)")
    shows(ember.zeros(2, 0, dtype=ember.bool), "tensor([], size=(2, 0), dtype=ember.bool)")


def test_autograd_suffixes():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    shows(x, "tensor([1., 2.], requires_grad=True)")
    shows(x * 2, "tensor([2., 4.], grad_fn=<MulBackward0>)")
    shows((x * 2).sum(), "tensor(6., grad_fn=<SumBackward0>)")
    shows(x.detach(), "tensor([1., 2.])")
    shows(ember.tensor([1.5], dtype=ember.float64, requires_grad=True),
          "tensor([1.5000], dtype=ember.float64, requires_grad=True)")


def test_long_rows_wrap_at_80_columns():
    shows(ember.arange(30.0), "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n"
                              "        14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,\n"
                              "        28., 29.])")
    shows(ember.arange(12.0).reshape(1, 12) * 1.5,
          "tensor([[ 0.0000,  1.5000,  3.0000,  4.5000,  6.0000,  7.5000,  9.0000, 10.5000,\n"
          "         12.0000, 13.5000, 15.0000, 16.5000]])")


def test_suffixes_that_would_pass_80_columns_start_a_new_line():
    x = (ember.arange(8.0, dtype=ember.float64) * 1.5).requires_grad_()
    shows(x, "tensor([ 0.0000,  1.5000,  3.0000,  4.5000,  6.0000,  7.5000,  9.0000, 10.5000],\n"
             "       dtype=ember.float64, requires_grad=True)")


def test_three_dims_separate_blocks_with_blank_lines():
    shows(ember.arange(8).reshape(2, 2, 2), "tensor([[[0, 1],\n"
                                            "         [2, 3]],\n"
                                            "\n"
                                            "        [[4, 5],\n"
                                            "         [6, 7]]])")


def test_more_than_1000_elements_are_summarised():
    shows(ember.arange(2000.0), "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n"
                                "        1.9990e+03])")
    shows(ember.arange(3000).reshape(3, 1000), "tensor([[   0,    1,    2,  ...,  997,  998,  999],\n"
                                               "        [1000, 1001, 1002,  ..., 1997, 1998, 1999],\n"
                                               "        [2000, 2001, 2002,  ..., 2997, 2998, 2999]])")
    shows(ember.arange(1001).reshape(1001, 1), "tensor([[   0],\n"
                                               "        [   1],\n"
                                               "        [   2],\n"
                                               "        ...,\n"
                                               "        [ 998],\n"
                                               "        [ 999],\n"
                                               "        [1000]])")
    ones = repr(ember.ones(1000))  # exactly 1000 is not summarised: 18 per line of at most 80 columns
    lines = ones.split("\n")
    assert "..." not in ones and len(lines) == 56 and ones.count("1.") == 1000
    assert lines[0] == "tensor([" + ", ".join(["1."] * 18) + "," and max(len(line) for line in lines) <= 80


def test_summarised_format_is_decided_by_the_shown_values_only():
    x = ember.zeros(2000)
    x[1000] = 0.5  # hidden by the summary: the shown zeros keep the integer format
    shows(x, "tensor([0., 0., 0.,  ..., 0., 0., 0.])")


def test_format_spec_on_zero_d_tensors():
    assert f"{ember.tensor(3.14159):.2f}" == "3.14"
    assert f"{ember.tensor(7):>4}" == "   7"
    assert f"{ember.tensor([1.0, 2.0])}" == "tensor([1., 2.])"
    assert "{:.3e}".format(ember.tensor(12345.678)) == "1.235e+04"


def test_format_without_spec_on_zero_d_tensor_formats_the_item():
    assert f"{ember.tensor(3.5)}" == "3.5"


def test_type_names():
    assert ember.zeros(1).type() == "ember.FloatTensor"
    assert ember.zeros(1, dtype=ember.int64).type() == "ember.LongTensor"
    assert ember.zeros(1, dtype=ember.bool).type() == "ember.BoolTensor"
    assert repr(ember.Size([2, 3])) == "ember.Size([2, 3])"
    assert repr(ember.float32) == "ember.float32"


def test_printing_does_not_change_or_record_anything():
    x = ember.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    y = x * 2
    repr(y)
    assert y.grad_fn.name() == "MulBackward0" and x.grad is None
