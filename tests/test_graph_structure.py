"""segments.graph_structure: what tells two traces of a compiled function apart when the second
confirms the first (jit's deferred compile) compares as the IR's JSON form would."""
import numpy as np

import ember
from ember.frontend.segments import graph_structure, same_structure


class _Structure:
    """A trace's graph_structure, compared as jit compares traces (`same_structure`, which
    must agree with the tuples' equality)."""

    def __init__(self, graph):
        self.graph, self.key = graph, graph_structure(graph)

    def __eq__(self, other):
        same = same_structure(self.graph, other.graph)
        assert same == (self.key == other.key) == same_structure(other.graph, self.graph)
        return same


def _structure(fn, *args):
    return _Structure(ember.trace(fn, *args))


def test_two_traces_of_one_program_have_one_structure():
    x = ember.randn(3, 4)
    assert _structure(lambda x: (x * 2).sum(1), x) == _structure(lambda x: (x * 2).sum(1), x)


def test_values_json_would_tell_apart_are_told_apart():
    x = ember.randn(3)
    assert _structure(lambda x: x * 0.0, x) != _structure(lambda x: x * -0.0, x)  # a signed zero
    assert _structure(lambda x: x.sum(0, keepdim=True), x) != _structure(lambda x: x.sum(0, keepdim=False), x)
    a, b = np.zeros(3, np.float32), np.zeros(3, np.float32)
    b[1] = 1e-30  # constants differing in one element
    assert _structure(lambda x: x + ember.tensor(a), x) != _structure(lambda x: x + ember.tensor(b), x)
    assert _structure(lambda x: x * float("nan"), x) == _structure(lambda x: x * float("nan"), x)


def test_numpy_booleans_and_dict_keys_compare_as_json_would():
    from ember.frontend.segments import _comparable
    assert _comparable(np.True_) == _comparable(True)  # (JSON writes both as true)
    assert _comparable({1: 2}) != _comparable({1.0: 2}) != _comparable({True: 2})
