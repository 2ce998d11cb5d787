"""Test setup: strict mode checks every eager primitive against its shape rule; each test
starts from the same seed; GPU programs compute convolutions in float32 (PyTorch's default
lets them use TF32, cudnn.allow_tf32; tests compare them with eager float32 at tight
tolerances, and tests/test_gpu_tensor_cores.py turns TF32 on where it checks it)."""
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
    ember.backends.cudnn.allow_tf32 = False
    yield
    STATE.strict = previous
    ember.backends.cudnn.allow_tf32 = False
    ember.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture
def fresh_compile_cache(tmp_path, monkeypatch):
    """A compile cache of this test alone: a test of when a training step first runs compiled
    (the second trace confirms the first) must not find a confirmation an earlier test left in
    the session's cache (compiler/driver.py `confirmed_before`)."""
    from ember import config
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"
