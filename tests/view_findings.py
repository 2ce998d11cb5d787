"""Disagreements with PyTorch that the view/in-place oracle found and that are still open:
one minimal program per class (from tests/torch_oracle.py's 10,000-program runs against
PyTorch 2.13). Not collected by pytest: run `python tests/view_findings.py` to replay them; a
class that now agrees prints "fixed" and moves into tests/test_view_oracle.py's FOUND_AND_FIXED,
which every CI run replays.
"""
import ember
from test_view_oracle import hand_written
from view_programs import MODEL, InputSpec, compare, report, run_program

# ---------------------------------------------------------------- the oracle's findings
# One minimal program per class of disagreement found by tests/torch_oracle.py (10,000 programs
# against PyTorch), with the runners it concerns.
EAGER, LLVM, INTERPRET = "eager", "llvm", "interpret"
RUNNERS = {EAGER: None, LLVM: lambda fn: ember.compile(fn, backend="llvm"),
           INTERPRET: lambda fn: ember.compile(fn, backend="interpret")}
FINDINGS = [
    # compiled: returned views of one intermediate do not share memory
    ("returned_views_of_one_intermediate_share_memory", (LLVM, INTERPRET),
     hand_written(["t1 = T.ones(1, 4, dtype=T.float64)", "t2 = t1.narrow(0, 0, 1)", "t3 = t2.expand(2, 1, 4)"], [],
                  outputs=("t3", "t2"))),
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


