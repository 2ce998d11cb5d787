"""Disagreements with PyTorch that the view/in-place oracle found and that are still open:
one minimal program per class (from tests/torch_oracle.py's 10,000-program runs against
PyTorch 2.13; /work/notes of the session that found them has the full report). Not collected
by pytest: run `python tests/view_findings.py` to replay them; a class that now agrees prints
"fixed" and should move into tests/test_view_oracle.py as a regression test.
"""
import ember
from test_view_oracle import hand_written
from view_programs import MODEL, InputSpec, compare, report, run_program

# ---------------------------------------------------------------- the oracle's findings
# One minimal program per class of disagreement found by tests/torch_oracle.py (10,000 programs
# against PyTorch; see /work/notes/oracle_findings.md), with the runners it concerns.
EAGER, LLVM, INTERPRET = "eager", "llvm", "interpret"
RUNNERS = {EAGER: None, LLVM: lambda fn: ember.compile(fn, backend="llvm"),
           INTERPRET: lambda fn: ember.compile(fn, backend="interpret")}
FINDINGS = [
    # compiled llvm: an output computed as x * 1 (or a clone) is returned in the argument's own buffer
    ("output_of_x_times_1_does_not_alias_the_argument", (LLVM,),
     hand_written(["t1 = x0 * 1"], [("x0", (2, 1, 4), False, "float32")], outputs=("t1",))),
    ("clone_is_not_overwritten_by_a_later_write_to_its_source", (LLVM,),  # (only with an input needing grad)
     hand_written(["t1 = x0.reshape(8, 1, 2)", "t2 = x0.clone()", "t1.relu_()"],
                  [("x0", (4, 4), False), ("x1", (4, 3), True, "float32")], outputs=("t2",))),
    # eager and compiled: a view op that changes nothing returns the tensor itself, so a view taken
    # under no_grad still passes gradients, and in-place errors name the wrong tensor
    ("no_op_view_under_no_grad_passes_no_gradient", (EAGER, LLVM),
     hand_written(["t1 = s1.permute(0, 1)", ("with", ["t2 = t1.reshape(3, 4)"])], [("s1", (3, 4), True)],
                  outputs=("s1", "t2"), backward="inside")),
    ("full_narrow_under_no_grad_leaves_grad_none", (EAGER,),
     hand_written([("with", ["t1 = x0.narrow(0, 0, 1)"])], [("x0", (1, 4), True)], outputs=("t1",),
                  backward="inside")),
    ("in_place_on_no_op_squeeze_of_a_leaf_is_a_view_of_a_leaf", (EAGER,),
     hand_written(["t1 = p1.squeeze(0)", "t1.add_(t1)"], [("p1", (2, 3, 4), True)])),
    ("full_slice_under_no_grad_is_cut_from_autograd", (EAGER, LLVM),
     hand_written([("with", ["t1 = s1[:]", "t2 = t1 * 1"]), "t3 = t2 * 1", "t4 = t1 * t3", "t5 = t4 * 1",
                   "t3.add_(t4)"], [("s1", (2, 3, 4), True, "float32")], outputs=("t5",), backward="inside")),
    # eager: a float64 0-d operand of a float32 op is saved as its cast copy; writes to it go unnoticed
    ("write_to_a_saved_mixed_dtype_operand_raises_at_backward", (EAGER,),
     hand_written(["t1 = x1.sum()", "t2 = x0 * t1", "t1.add_(1.0)"],
                  [("x0", (2, 1, 4), True, "float32"), ("x1", (3, 1), False)], outputs=("t2",), backward="inside")),
    # eager: the history behind copy_ is cut; PyTorch still runs it (zero gradients, version checks)
    ("backward_behind_copy_checks_saved_versions", (EAGER,),
     hand_written(["t1 = s1.exp()", "t1.copy_(s1)", "t3 = t1 + s1"], [("s1", (3, 4), True)], outputs=("t3",),
                  backward="outside")),
    ("leaf_behind_copy_gets_a_zero_gradient", (EAGER,),
     hand_written(["t1 = x1 * 2.0", "t1.copy_(x0)"], [("x0", (4,), True), ("x1", (4,), True)], outputs=("t1",),
                  backward="inside")),
    # eager: writes PyTorch allows into expanded tensors
    ("setitem_with_the_same_memory_is_a_no_op", (EAGER,),
     hand_written(["t1 = b0.expand(2, 3, 4)", "t1[:1] = b0"], [("b0", (1, 4), False, "float32")])),
    ("size_1_dim_of_stride_0_is_writable", (EAGER,),
     hand_written(["t1 = s0.sum()", "t2 = t1.expand(2)", "t3 = t2[:1:2]", "t3.add_(t3)"], [("s0", (4, 4), True)],
                  outputs=("t2",))),
    # compiled (tracing): writes through expanded views that eager mode and PyTorch allow
    ("fill_of_an_expanded_view_traces", (LLVM, INTERPRET),
     hand_written(["t1 = s0.expand(2, 4, 4)", "t1.fill_(-0.25)"], [("s0", (4, 4), False, "float32")],
                  outputs=("s0",))),
    ("setitem_into_a_size_1_slice_of_an_expanded_view_traces", (LLVM,),
     hand_written(["t1 = b0.sum()", "t3 = t1.expand(2)", "t4 = t1 * 1", "t3[::2] = t4"], [("b0", (2, 3, 4), False)],
                  outputs=("t3",))),
    # compiled (tracing): returning a multi-output or no_grad view whose base changed is no error
    ("returning_an_unbind_output_after_a_no_grad_write_to_its_base", (LLVM,),
     hand_written(["t2, t3, t4 = s0.unbind(0)", ("with", ["s0.relu_()"])], [("s0", (3, 4), True, "float32")],
                  outputs=("t3",))),
    # compiled: outputs keep their autograd history (requires_grad, grad_fn) on compiled calls
    ("output_keeps_requires_grad_when_the_program_runs_backward", (LLVM, INTERPRET),
     hand_written(["t1 = s0.sigmoid()", ("with", ["s0.add_(t1)"])],
                  [InputSpec("s0", (3, 1), "float32", True, "state", fresh=False)], outputs=("t1",),
                  backward="inside", form="closure")),
    ("loss_from_a_view_made_under_no_grad_can_run_backward", (LLVM,),
     hand_written([("with", ["t1 = s0.t()"])], [("s0", (4, 4), True, "float32")], outputs=("t1",),
                  backward="outside")),
    # compiled interpret: returned views of one intermediate alias each other
    ("returned_views_of_one_intermediate_share_memory", (INTERPRET,),
     hand_written(["t1 = T.ones(1, 4, dtype=T.float64)", "t2 = t1.narrow(0, 0, 1)", "t3 = t2.expand(2, 1, 4)"], [],
                  outputs=("t3", "t2"))),
    # eager: a view made under no_grad of a multi-output view is a no_grad view (creation mode order)
    ("no_grad_view_of_a_chunk_piece_reports_no_grad_mode", (EAGER,),
     hand_written(["t1, t2 = s0.chunk(3, 0)", ("with", ["t3 = t1.transpose(0, 1)"]), "t3.relu_()"],
                  [("s0", (4, 3), True, "float32")])),
]


FINDING_CASES = [(name, program, runner) for name, runners, program in FINDINGS for runner in runners]


def main():
    """Replay each finding; print the ones ember still disagrees on (exit status 1 if any)."""
    open_cases = 0
    for name, program, runner in FINDING_CASES:
        mismatches = compare(program, run_program(program, MODEL), run_program(program, ember, RUNNERS[runner]))
        if mismatches:
            open_cases += 1
            print(report(program, mismatches, f"ember ({runner})"), end="\n\n")
        else:
            print(f"fixed: {name} ({runner})")
    print(f"{open_cases} of {len(FINDING_CASES)} cases still disagree")
    return 1 if open_cases else 0


if __name__ == "__main__":
    raise SystemExit(main())


