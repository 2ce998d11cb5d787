"""`CompiledModule`: what `ember.compile(module)` returns. Still a Module: calling it runs the
compiled program, while train()/eval(), parameters() and state_dict() reach the original
module (stored as `_orig_mod`, with PyTorch's `_orig_mod.` state-dict prefix)."""
from .nn.module import Module


class CompiledModule(Module):
    def __init__(self, module, compiled):
        super().__init__()
        self._orig_mod = module
        object.__setattr__(self, "_compiled", compiled)

    def __call__(self, *args, **kwargs):
        return self._compiled(*args, **kwargs)

    def forward(self, *args, **kwargs):
        return self._compiled(*args, **kwargs)

    @property
    def report(self):
        return self._compiled.report

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["_orig_mod"], name)

    def __repr__(self):
        return f"CompiledModule(backend={self._compiled.backend.name})\n  (_orig_mod): " + \
            repr(self._orig_mod).replace("\n", "\n  ")
