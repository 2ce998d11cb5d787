"""runtime/host_allocator.py: eager temporaries reuse freed memory instead of faulting in new pages."""
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc's thresholds are glibc's (mallopt)")

# Five 256 KiB temporaries per step, as an eager layer norm's backward makes: with glibc's defaults
# each step unmaps them (or trims the heap) and faults their pages in again on the next.
PATTERN = """
import resource
import numpy as np
import ember
ember.zeros(1)  # (loads the frontend, which sets the policy)
from ember.runtime import host_allocator
x = np.ones((512, 128), np.float32)
def step():
    a = x * 2; b = a + x; c = b - a; d = c * b; e = d + a
    return float(e[0, 0])
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    step()
print(host_allocator.keep_freed_memory(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""


def _faults_per_step(**env):
    result = subprocess.run([sys.executable, "-c", PATTERN], env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=120, check=True)
    took, faults = result.stdout.split()
    return took == "True", float(faults)


def test_eager_temporaries_reuse_freed_memory():
    took, faults = _faults_per_step()
    assert took
    assert faults < 8, f"{faults} page faults per step: freed temporaries went back to the kernel"


def test_the_flag_leaves_mallocs_defaults():
    took, faults = _faults_per_step(EMBER_MALLOC_TUNING="0")
    assert not took
    assert faults > 64, f"only {faults} page faults per step under glibc's defaults: the pattern no longer " \
                        "shows what the policy is for"
