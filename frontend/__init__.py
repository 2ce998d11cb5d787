"""ember.frontend: eager tensors, autograd, nn / optim / data, and the tracer.

Importing it installs the dispatcher (frontend.dispatch) and Tensor's methods, and sets the host
allocator's policy for eager arrays (runtime/host_allocator.py).
"""
from ember.runtime import host_allocator
from . import dispatch  # noqa: F401  (installs the dispatcher before anything binds)
from . import tensor_methods  # noqa: F401  (attaches Tensor's methods)

host_allocator.keep_freed_memory()
