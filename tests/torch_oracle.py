"""Run generated view/in-place programs in real PyTorch, in the numpy reference model and in
ember (eager and compiled), and summarise the disagreements by class with a minimal example each.

    /tmp/torchenv/bin/python tests/torch_oracle.py --programs 10000 [--save classes.txt]
    /tmp/torchenv/bin/python tests/torch_oracle.py --replay classes.txt   # do those classes still occur?

Not a test (no test_ prefix; nothing collected imports it): it needs torch, which ember's tests
must not. First it validates the model against PyTorch ("model vs torch" classes must be empty
for the model to be trusted), then it reports ember against PyTorch. A class is the runner and
the aspect that disagrees (see view_programs.compare); for eager ember the op of the first
statement after which some live tensor differs is added. Each class keeps its smallest program,
shrunk by deleting statements, outputs, inputs and requires_grad flags while the class persists.
"""
import argparse
import collections
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("EMBER_CACHE_DIR", os.path.join("/tmp", f"ember-oracle-cache-{os.getuid()}"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

import ember  # noqa: E402
import view_programs as vp  # noqa: E402

RUNNERS = {
    "eager": None,
    "compiled-llvm": lambda fn: ember.compile(fn, backend="llvm"),
    "compiled-interpret": lambda fn: ember.compile(fn, backend="interpret"),
}


def run_safely(program, lib, wrap=None):
    """run_program, with a crash of the harness itself turned into one failed call."""
    try:
        return vp.run_program(program, lib, wrap)
    except Exception as error:  # noqa: BLE001 -- e.g. ember.compile failing outside the call
        failed = vp.CallResult(error=f"harness:{type(error).__name__}", message=f"{type(error).__name__}: {error}")
        return [failed] * vp.CALLS


def _live_values(lib, program, body):
    """Values of every live tensor after running `body` (top-level statements) eagerly in lib."""
    if lib is vp.MODEL:
        vp.MODE.grad, vp.MODE.tape = True, None
    env = {"T": lib}
    env.update(vp.build_inputs(program.inputs, lib, vp.input_arrays(program, 0)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile("\n".join(vp._body_lines(body, "")), "<step>", "exec"), env)
    except Exception as error:  # noqa: BLE001
        return vp.classify_error(error)
    return {name: vp._value(t) for name, t in env.items() if hasattr(t, "detach")}


def first_divergence(program, lib):
    """The op of the first top-level statement after which lib (eager) and the model differ in a
    live tensor's value or in raising, or None."""
    for n in range(1, len(program.body) + 1):
        expected = _live_values(vp.MODEL, program, list(program.body[:n]))
        got = _live_values(lib, program, list(program.body[:n]))
        if isinstance(expected, str) or isinstance(got, str):
            if expected != got:
                return program.body[n - 1].op
            continue
        for name, value in expected.items():
            other = got.get(name)
            if other is None or other.shape != value.shape or not np.allclose(other, value, rtol=1e-4, atol=1e-5,
                                                                               equal_nan=True):
                stmt = program.body[n - 1]
                return stmt.op if not stmt.body else "no_grad:" + "/".join(s.op for s in stmt.body)
    return None


def disagreements(program, runners):
    """{class key: mismatches} for one program. Model classes compare the model with PyTorch;
    ember classes compare ember with PyTorch. A compiled class says on which call it first
    differs (call 1 traces) and whether eager ember agrees with PyTorch on the program."""
    out = {}
    model = run_safely(program, vp.MODEL)
    truth = run_safely(program, torch)
    mismatches = vp.compare(program, model, truth)
    for m in mismatches:
        out.setdefault(f"model vs torch: {m.aspect}", mismatches)
    eager_agrees = None
    for runner in runners:
        got = run_safely(program, ember, RUNNERS[runner])
        mismatches = vp.compare(program, truth, got)
        if runner == "eager":
            eager_agrees = not mismatches
        if not mismatches:
            continue
        first = mismatches[0]
        if runner == "eager":
            suffix = ""
            if not first.aspect.startswith(("missing error", "unexpected error", "wrong error")):
                op = first_divergence(program, ember)
                suffix = f" [first differs after: {op}]" if op else ""
        else:
            suffix = " [call 1]" if first.call == 0 else " [calls 2+]"
            if eager_agrees is not None:
                suffix += " [eager agrees]" if eager_agrees else " [eager disagrees too]"
        out.setdefault(f"{runner}: {first.aspect}{suffix}", mismatches)
    return out


def minimize(program, key, runners, budget_s=60.0):
    return vp.minimize(program, lambda candidate: key in disagreements(candidate, runners), budget_s)


def replay(path, runners):
    """Re-run the minimal programs saved by --save; print each class and whether it remains."""
    names = {"Program": vp.Program, "InputSpec": vp.InputSpec, "Stmt": vp.Stmt}
    with open(path) as saved:
        for line in saved:
            key, text = line.rstrip("\n").split("\t", 1)
            program = eval(text, names)  # noqa: S307 -- our own repr of a Program
            now = disagreements(program, runners)
            print(f"{'REMAINS' if key in now else 'gone   '}  {key}" +
                  (f"   (now: {'; '.join(sorted(now))})" if key not in now and now else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomized)")
    parser.add_argument("--runners", default="eager,compiled-llvm,compiled-interpret")
    parser.add_argument("--no-minimize", action="store_true")
    parser.add_argument("--minimize-seconds", type=float, default=60.0)
    parser.add_argument("--show", type=int, default=3, help="mismatch lines shown per class")
    parser.add_argument("--save", help="write each class's minimal program (key, tab, repr) to this file")
    parser.add_argument("--replay", help="re-run the programs a --save wrote and say which classes remain")
    args = parser.parse_args()
    runners = [r for r in args.runners.split(",") if r]
    if args.replay:
        replay(args.replay, runners)
        return
    classes = collections.defaultdict(list)  # key -> [(size, program, mismatches)]
    counts = collections.Counter()
    done = [0]
    started = time.time()

    @settings(max_examples=args.programs, derandomize=args.seed is None, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(vp.programs())
    def explore(program):
        done[0] += 1
        for key, mismatches in disagreements(program, runners).items():
            counts[key] += 1
            size = (sum(1 for _ in program.statements()), len(vp.source(program)))
            entry = classes[key]
            if not entry or size < entry[0][0]:
                classes[key] = [(size, program, mismatches)]
        if done[0] % 250 == 0:
            print(f"... {done[0]} programs, {len(classes)} classes, {time.time() - started:.0f} s", file=sys.stderr,
                  flush=True)

    if args.seed is not None:
        explore = seed(args.seed)(explore)
    explore()
    print(f"{done[0]} programs; runners: torch, model, {', '.join(runners)}; {time.time() - started:.0f} s\n")
    print("disagreement classes (programs affected):")
    for key in sorted(classes, key=lambda k: (not k.startswith("model"), -counts[k])):
        print(f"  {counts[key]:6d}  {key}")
    for key in sorted(classes, key=lambda k: (not k.startswith("model"), -counts[k])):
        _, program, mismatches = classes[key][0]
        if not args.no_minimize:
            program = minimize(program, key, runners if not key.startswith("model") else [], args.minimize_seconds)
            mismatches = disagreements(program, runners).get(key, mismatches)
        if args.save:
            with open(args.save, "a") as saved:
                saved.write(f"{key}\t{program!r}\n")
        print("\n" + "=" * 100)
        print(f"{key}   ({counts[key]} programs)\n")
        print(vp.describe(program))
        print()
        for m in mismatches[:args.show]:
            print(m)


if __name__ == "__main__":
    main()
