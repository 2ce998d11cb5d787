"""ember.passes: IR -> IR transformations (autodiff, simplify, fusion, memory planning) and
the pipeline that runs them with per-stage dumps."""
from .simplify import simplify, SimplifyStats, RULES
from .autodiff import gradients, split_forward_backward

__all__ = ["simplify", "SimplifyStats", "RULES", "gradients", "split_forward_backward"]
