"""Test setup: strict mode checks every eager primitive against its shape rule; each test
starts from the same seed."""
import os
import tempfile

import pytest

# compiled code goes to a cache of this test session, not the user's
os.environ.setdefault("EMBER_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"ember-test-cache-{os.getuid()}"))

import ember  # noqa: E402
from ember.frontend.dispatch import STATE  # noqa: E402


@pytest.fixture(autouse=True)
def _strict_and_seeded():
    previous = STATE.strict
    STATE.strict = True
    ember.manual_seed(0)
    yield
    STATE.strict = previous
