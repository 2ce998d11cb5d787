"""`Module`: the base class of every layer and model, with torch.nn.Module's behaviour.

Attribute assignment registers Parameters, submodules and buffers; the module tree gives
parameters(), state_dict() and a torch-identical `print(net)`. Calling a module pushes its
qualified name ("conv1", "layer1.0.conv2") onto the dispatch state's module path, so errors
raised by primitives name the module and the tracer names IR nodes after it.
"""
import itertools
from collections import OrderedDict, namedtuple

from ember import dtypes
from ember.frontend.autograd import no_grad
from ember.frontend.dispatch import STATE
from ember.frontend.tensor import Tensor, Device
from ember.frontend.views import bump_version
from ember.frontend.device_tensors import move
from .parameter import Parameter

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# Bumped whenever any module gains, loses or replaces a submodule, parameter or buffer:
# invalidates the caches keyed on the module tree (the id -> qualified name maps root
# modules keep for __call__, ember.compile's list of a module's state).
_tree_version = [0]
# The name map of the root module being called (children of the running model look
# themselves up in it); None outside any module call.
_active_names = [None]


# Bumped whenever a plain attribute of any module is assigned (training flags, Dropout.p, ...):
# ember.compile caches each module's settings until it moves.
_settings_version = [0]


def _tree_changed():
    _tree_version[0] += 1


class RemovableHandle:
    """Returned by register_*_hook; `handle.remove()` unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, hooks):
        self.hooks = hooks
        self.id = next(RemovableHandle._ids)

    def remove(self):
        self.hooks.pop(self.id, None)
        _settings_version[0] += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _addindent(text, spaces):
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


class Module:
    """Base class for all neural network modules; subclass it and define `forward`."""

    training: bool
    _version = 1
    call_super_init = False

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments: "
                            f"{args} {kwargs}")
        set_attr = object.__setattr__
        set_attr(self, "training", True)
        set_attr(self, "_parameters", OrderedDict())
        set_attr(self, "_buffers", OrderedDict())
        set_attr(self, "_non_persistent_buffers_set", set())
        set_attr(self, "_modules", OrderedDict())
        set_attr(self, "_forward_hooks", OrderedDict())
        set_attr(self, "_forward_pre_hooks", OrderedDict())
        set_attr(self, "_forward_hooks_with_kwargs", set())
        set_attr(self, "_forward_pre_hooks_with_kwargs", set())
        set_attr(self, "_backward_hooks", OrderedDict())
        set_attr(self, "_backward_pre_hooks", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    # ------------------------------------------------------------------ calling
    def __call__(self, *args, **kwargs):
        path = STATE.module_path
        previous_names = _active_names[0]
        if path and previous_names is not None:
            name = previous_names.get(id(self)) or type(self).__name__
        else:
            _active_names[0] = self._qualified_names()
            name = type(self).__name__
        path.append(name)
        try:
            if self._forward_pre_hooks or self._forward_hooks or self._backward_hooks or self._backward_pre_hooks:
                return self._call_with_hooks(args, kwargs)
            return self.forward(*args, **kwargs)
        finally:
            path.pop()
            _active_names[0] = previous_names

    def _qualified_names(self):
        """id(submodule) -> qualified name below this module, cached until the tree changes."""
        cache = self.__dict__.get("_names_cache")
        if cache is not None and cache[0] == _tree_version[0]:
            return cache[1]
        names = {id(module): name for name, module in self.named_modules() if name}
        object.__setattr__(self, "_names_cache", (_tree_version[0], names))
        return names

    def _call_with_hooks(self, args, kwargs):
        for hook_id, hook in list(self._forward_pre_hooks.items()):
            if hook_id in self._forward_pre_hooks_with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        backward = None
        if (self._backward_hooks or self._backward_pre_hooks) and STATE.grad_enabled:
            from .backward_hooks import BackwardHook
            backward = BackwardHook(self, self._backward_hooks, self._backward_pre_hooks)
            args = backward.wrap_inputs(args)
        output = self.forward(*args, **kwargs)
        for hook_id, hook in list(self._forward_hooks.items()):
            if hook_id in self._forward_hooks_with_kwargs:
                result = hook(self, args, kwargs, output)
            else:
                result = hook(self, args, output)
            if result is not None:
                output = result
        return backward.wrap_outputs(output) if backward is not None else output

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """`hook(module, args)` runs before forward; a returned value replaces the args."""
        return self._add_hook(self._forward_pre_hooks, self._forward_pre_hooks_with_kwargs,
                              hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """`hook(module, args, output)` runs after forward; a returned value replaces the output."""
        return self._add_hook(self._forward_hooks, self._forward_hooks_with_kwargs,
                              hook, prepend, with_kwargs)

    def register_full_backward_hook(self, hook, prepend=False):
        """`hook(module, grad_input, grad_output)` runs when the gradients for the module's
        positional inputs are computed; a returned tuple replaces grad_input."""
        return self._add_hook(self._backward_hooks, set(), hook, prepend, False)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """`hook(module, grad_output)` runs when the gradients for the module's outputs are
        computed, before anything else uses them; a returned tuple replaces grad_output."""
        return self._add_hook(self._backward_pre_hooks, set(), hook, prepend, False)

    @staticmethod
    def _add_hook(hooks, with_kwargs_set, hook, prepend, with_kwargs):
        _settings_version[0] += 1  # compiled callers re-read the module's settings (hooks included)
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        if with_kwargs:
            with_kwargs_set.add(handle.id)
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    # ------------------------------------------------------------------ attributes
    def __getattr__(self, name):
        # only reached when normal lookup fails
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            entries = d.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._forget(name, keep="_parameters")
            self.register_parameter(name, value)
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as parameter '{name}' "
                                f"(ember.nn.Parameter or None expected)")
            params[name] = None
            _tree_changed()
            return
        modules = d.get("_modules")
        if isinstance(value, Module):
            if modules is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._forget(name, keep="_modules")
            modules[name] = value
            _tree_changed()
            return
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as child module '{name}' "
                                f"(ember.nn.Module or None expected)")
            modules[name] = None
            _tree_changed()
            return
        buffers = d.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{_type_name(value)}' as buffer '{name}' "
                                f"(ember.Tensor or None expected)")
            if buffers[name] is not value:
                buffers[name] = value
                _tree_changed()
            return
        _settings_version[0] += 1
        object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        """Remove `name` from every table but `keep` (an attribute changes kind)."""
        d = self.__dict__
        d.pop(name, None)
        for table in ("_parameters", "_buffers", "_modules"):
            if table != keep and name in d[table]:
                del d[table][name]
                if table == "_modules":
                    _tree_changed()
        d["_non_persistent_buffers_set"].discard(name)

    def __delattr__(self, name):
        d = self.__dict__
        if name in d.get("_parameters", ()):
            del d["_parameters"][name]
            _tree_changed()
        elif name in d.get("_buffers", ()):
            del d["_buffers"][name]
            d["_non_persistent_buffers_set"].discard(name)
            _tree_changed()
        elif name in d.get("_modules", ()):
            del d["_modules"][name]
            _tree_changed()
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(object.__dir__(self)) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_names_cache", None)  # keyed by object ids: rebuilt after a copy
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ------------------------------------------------------------------ registration
    def register_parameter(self, name, param):
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        _check_name("parameter", name, self)
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{_type_name(param)}' object to parameter '{name}' "
                            f"(ember.nn.Parameter or None required)")
        if param is not None and param.grad_fn is not None:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters must "
                             f"be created explicitly. To express '{name}' as a function of another Tensor, "
                             f"compute the value in the forward() method.")
        self._parameters[name] = param
        _tree_changed()

    def register_buffer(self, name, tensor, persistent=True):
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        _check_name("buffer", name, self)
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{_type_name(tensor)}' object to buffer '{name}' "
                            f"(ember.Tensor or None required)")
        self._buffers[name] = tensor
        _tree_changed()
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{_type_name(module)} is not a Module subclass")
        _check_name("module", name, self)
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._modules[name] = module
        _tree_changed()

    register_module = add_module

    def get_submodule(self, target):
        if target == "":
            return self
        module = self
        walked = []
        for item in target.split("."):
            if not hasattr(module, item):
                raise AttributeError(f"{module._get_name()} has no attribute `{item}`")
            module = getattr(module, item)
            walked.append(item)
            if not isinstance(module, Module):
                raise AttributeError(f"`{'.'.join(walked)}` is not an nn.Module")
        return module

    def get_parameter(self, target):
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._parameters:
            raise AttributeError(f"{module._get_name()} has no parameter `{name}`")
        return module._parameters[name]

    def get_buffer(self, target):
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._buffers:
            raise AttributeError(f"{module._get_name()} has no buffer `{name}`")
        return module._buffers[name]

    # ------------------------------------------------------------------ iteration
    def _named_members(self, get_members, prefix="", recurse=True, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in get_members(module):
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                if remove_duplicate:
                    seen.add(id(value))
                yield (module_prefix + "." if module_prefix else "") + name, value

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub_prefix = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub_prefix, remove_duplicate)

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        object.__setattr__(self, "training", mode)
        _settings_version[0] += 1
        for module in self.children():  # through each child's train(), which a subclass may override
            module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none:  # (no read of .grad: None either way, so a traced program holds on no .grad state)
                p.grad = None
            elif p.grad is not None:
                p.grad = p.grad.detach()
                with no_grad():
                    p.grad.zero_()

    def apply(self, fn):
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ dtype and device
    def _apply_to_tensors(self, convert):
        """Convert every parameter, gradient and buffer in place (the Parameter objects stay,
        so optimizers holding them keep working), as torch does by default."""
        for module in self.modules():
            for param in module._parameters.values():
                if param is None:
                    continue
                new = convert(param)
                if new is not param:
                    param._data = new._data
                    bump_version(param)
                if param.grad is not None:
                    param.grad = convert(param.grad)
            for name, buf in module._buffers.items():
                if buf is not None:
                    module._buffers[name] = convert(buf)
        return self

    def to(self, *args, **kwargs):
        """to(dtype), to(device), to(device, dtype), to(tensor): casts floating parameters and buffers."""
        dtype = kwargs.get("dtype")
        device = kwargs.get("device")
        for arg in args:
            if isinstance(arg, Tensor):
                dtype = arg.dtype
            elif isinstance(arg, (str, Device)) or type(arg) is int:
                device = arg
            elif arg is not None:
                dtype = arg
        if device is not None:
            self._move_to(device)
        if dtype is None:
            return self
        dtype = dtypes.as_dtype(dtype)
        if not dtype.is_floating_point:
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
        return self._cast_floating(dtype)

    def _cast_floating(self, dtype):
        def convert(t):
            if not t.is_floating_point() or t.dtype is dtype:
                return t
            with no_grad():
                out = t.to(dtype)
            out.requires_grad = t.requires_grad and t.grad_fn is None
            return out
        return self._apply_to_tensors(convert)

    def float(self):
        return self._cast_floating(dtypes.float32)

    def double(self):
        return self._cast_floating(dtypes.float64)

    def half(self):
        return self._cast_floating(dtypes.float16)

    def bfloat16(self):
        return self._cast_floating(dtypes.bfloat16)

    def type(self, dst_type):
        return self._cast_floating(dtypes.as_dtype(dst_type))

    def _move_to(self, device):
        """Every parameter, gradient and buffer on `device` (parameters keep their objects)."""
        def convert(t):
            with no_grad():
                return move(t, device)
        return self._apply_to_tensors(convert)

    def cpu(self):
        return self._move_to("cpu")

    def cuda(self, device=None):
        return self._move_to("cuda" if device is None else device if isinstance(device, (str, Device))
                             else f"cuda:{device}")

    # ------------------------------------------------------------------ state dict
    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """An OrderedDict of parameters and persistent buffers by qualified name (detached
        unless keep_vars)."""
        if args:  # torch's deprecated positional form: (destination, prefix, keep_vars)
            destination = args[0]
            if len(args) > 1:
                prefix = args[1]
            if len(args) > 2:
                keep_vars = args[2]
        if destination is None:
            destination = OrderedDict()
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else buf.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy values from `state_dict`; returns (missing_keys, unexpected_keys) and raises
        torch's "Error(s) in loading state_dict" when strict and keys differ, or on a shape mismatch."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        missing, unexpected, errors = [], [], []

        def load(module, local_state, prefix):
            module._load_from_state_dict(local_state, prefix, assign, missing, unexpected, errors)
            for name, child in module._modules.items():
                if child is not None:
                    child_prefix = prefix + name + "."
                    load(child, {k: v for k, v in local_state.items() if k.startswith(child_prefix)},
                         child_prefix)

        load(self, dict(state_dict), "")
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected)))
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in missing)))
        if errors:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(errors)))
        return IncompatibleKeys(missing, unexpected)

    def _load_from_state_dict(self, state_dict, prefix, assign, missing, unexpected, errors):
        persistent = {k: v for k, v in self._buffers.items() if k not in self._non_persistent_buffers_set}
        local = {k: v for k, v in itertools.chain(self._parameters.items(), persistent.items()) if v is not None}
        for name, current in local.items():
            key = prefix + name
            if key not in state_dict:
                missing.append(key)
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor):
                errors.append(f'While copying the parameter named "{key}", expected ember.Tensor or '
                              f'Tensor-like object from checkpoint but received {type(value)}')
                continue
            if tuple(value.shape) != tuple(current.shape):
                errors.append(f"size mismatch for {key}: copying a param with shape {value.shape} from "
                              f"checkpoint, the shape in current model is {current.shape}.")
                continue
            try:
                if assign:
                    self._assign(name, current, value)
                else:
                    with no_grad():
                        current.copy_(value)
            except Exception as error:  # reported with the key, like torch
                errors.append(f'While copying the parameter named "{key}", whose dimensions in the model are '
                              f'{current.shape} and whose dimensions in the checkpoint are {value.shape}, an '
                              f'exception occurred : {error.args}.')
        for key in state_dict:
            if not key.startswith(prefix):
                continue
            first, *rest = key[len(prefix):].split(".", 1)
            if (rest and first not in self._modules) or (not rest and first not in local):
                unexpected.append(key)

    def _assign(self, name, current, value):
        if isinstance(current, Parameter):
            setattr(self, name, value if isinstance(value, Parameter)
                    else Parameter(value.detach(), current.requires_grad))
        else:
            self._buffers[name] = value

    # ------------------------------------------------------------------ printing
    def _get_name(self):
        return type(self).__name__

    def extra_repr(self):
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({key}): {_addindent(repr(module), 2)}" for key, module in self._modules.items()]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"


def _check_name(kind, name, module):
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
    if name == "":
        raise KeyError(f'{kind} name can\'t be empty string ""')
    if "." in name:
        raise KeyError(f'{kind} name can\'t contain ".", got: {name}')


def _type_name(value):
    if isinstance(value, Tensor):
        from ember.frontend.printing import type_name
        return type_name(value)
    return type(value).__name__

