"""Test setup: strict mode checks every eager primitive against its shape rule; each test
starts from the same seed."""
import pytest

import ember
from ember.frontend.dispatch import STATE


@pytest.fixture(autouse=True)
def _strict_and_seeded():
    previous = STATE.strict
    STATE.strict = True
    ember.manual_seed(0)
    yield
    STATE.strict = previous
