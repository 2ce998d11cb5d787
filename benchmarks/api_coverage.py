"""How much of torch 2.13's public API ember provides, per list in ../shared/torch_api/ (or --lists):
torch functions, Tensor methods, nn modules, nn.functional.

A name counts as "provided" when ember has it, and as "tested" when, besides, a test under
tests/ calls it as an attribute (`.name`): the proxy for "a test checks its values". Names given
with --missing are printed per list.

    python benchmarks/api_coverage.py [--lists DIR] [--missing]
"""
import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def targets():
    import ember
    import ember.nn as nn
    import ember.nn.functional as F
    return {"torch_functions.txt": ("torch functions", ember), "tensor_methods.txt": ("Tensor methods", ember.Tensor),
            "nn_modules.txt": ("nn modules", nn), "nn_functional.txt": ("nn.functional", F)}


def test_text():
    texts = []
    for folder, _, files in os.walk(os.path.join(ROOT, "tests")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    texts.append(f.read())
    return "\n".join(texts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lists", default=os.path.join(ROOT, "..", "shared", "torch_api"))
    parser.add_argument("--missing", action="store_true", help="print the names ember does not provide")
    args = parser.parse_args()
    if not os.path.isdir(args.lists):
        sys.exit(f"api_coverage: no folder {args.lists} (give --lists DIR with torch_functions.txt and the others)")
    tests = test_text()
    print(f"{'list':<18} {'names':>6} {'provided':>14} {'tested':>14}")
    for file_name, (label, owner) in targets().items():
        with open(os.path.join(args.lists, file_name)) as f:
            names = [line.strip() for line in f if line.strip()]
        provided = [n for n in names if hasattr(owner, n)]
        tested = [n for n in provided if re.search(r"\." + re.escape(n) + r"\b", tests)]
        print(f"{label:<18} {len(names):>6} {len(provided):>6} ({100 * len(provided) / len(names):3.0f}%) "
              f"{len(tested):>6} ({100 * len(tested) / len(names):3.0f}%)")
        if args.missing:
            print("  missing: " + " ".join(n for n in names if n not in provided))


if __name__ == "__main__":
    main()
