"""ember.frontend: eager tensors, autograd, nn / optim / data, and the tracer.

Importing it installs the dispatcher (frontend.dispatch) and Tensor's methods.
"""
from . import dispatch  # noqa: F401  (installs the dispatcher before anything binds)
from . import tensor_methods  # noqa: F401  (attaches Tensor's methods)
