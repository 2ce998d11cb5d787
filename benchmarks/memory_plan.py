"""Kernel counts and arena sizes of the fused, memory-planned zoo graphs (forward, no_grad)
and of the seed Net's SGD(momentum) training step at batch 64.

    python3 benchmarks/memory_plan.py

Prints one row per graph: nodes (before fusion), kernels, arena, naive and lower-bound bytes
(allocation sizes, 64-byte aligned) and arena / lower bound.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import ember  # noqa: E402
from ember.passes.fusion import fuse  # noqa: E402
from ember.passes.memory import plan_memory  # noqa: E402
import zoo  # noqa: E402


seed_net_training_step = zoo.seed_net_training_step_graph

def graphs():
    for name in zoo.NAMES:
        fn, inputs = zoo.build(name)
        with ember.no_grad():
            yield name, ember.trace(fn, *inputs)
    yield "seed_net_train_step_b64", seed_net_training_step(64)


def main():
    header = ("graph", "nodes", "kernels", "arena", "naive", "lower bound", "arena/lb")
    rows = []
    for name, graph in graphs():
        nodes = len(graph)
        fusion = fuse(graph)
        plan = plan_memory(graph, fusion).check()
        ratio = plan.arena_bytes / plan.lower_bound_bytes if plan.lower_bound_bytes else 1.0
        rows.append((name, nodes, fusion.kernel_count, plan.arena_bytes, plan.naive_bytes,
                     plan.lower_bound_bytes, f"{ratio:.3f}"))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths))) + " |")


if __name__ == "__main__":
    main()
