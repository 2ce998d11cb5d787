"""ember.nn: Module, Parameter, the layers and losses, and the functional / init / utils
submodules, with torch.nn's names (`from ember import nn` reads like `from torch import nn`).
"""
from .parameter import Parameter
from .module import Module
from .modules import *  # noqa: F401,F403
from . import functional, init, utils, modules, parameter, parallel  # noqa: F401
