"""`Optimizer`: the base of ember.optim, PyTorch's contract for param groups, per-parameter
state, `zero_grad`, `step` hooks and the index-keyed `state_dict` format.

Algorithms (sgd.py, adam.py, ...) subclass it and write their update with Tensor in-place
ops under `no_grad`, so eager runs write memory and a trace records the update functionally.
"""
import copy
import functools
import itertools
import weakref
import warnings
from collections import OrderedDict, defaultdict

from ember import dtypes
from ember.ops.registry import in_mode
from ..autograd import enable_grad, no_grad
from ..creation import zeros
from ..dispatch import STATE
from ..runtime_scalars import ScalarInput
from ..tensor import Tensor


class _RequiredParameter:
    """Marks a hyperparameter that every param group must give (torch.optim.optimizer.required)."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class RemovableHandle:
    """Returned by the hook registrations; `remove()` unregisters the hook."""

    _next_id = itertools.count()

    def __init__(self, hooks):
        self._hooks = hooks
        self.id = next(RemovableHandle._next_id)

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _type_name(obj):
    return "ember.Tensor" if isinstance(obj, Tensor) else type(obj).__module__ + "." + type(obj).__qualname__


def _with_step_hooks(step):
    """Wrap a subclass's `step` so pre/post hooks run around it and schedulers can tell that
    the optimizer has stepped (PyTorch's `profile_hook_step`)."""

    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        for hook in list(self._step_pre_hooks.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(f"a step pre-hook must return None or a tuple of (new_args, new_kwargs), "
                                       f"but got {result!r}")
                args, kwargs = result
        out = step(self, *args, **kwargs)
        self._opt_called = True
        for hook in list(self._step_post_hooks.values()):
            hook(self, args, kwargs)
        return out

    wrapper._ember_step_hooks = True
    return wrapper


class Optimizer:
    """Base class of all optimizers.

    `params` is an iterable of tensors, or of dicts (param groups) each holding 'params' and
    per-group options that override `defaults`.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_ember_step_hooks", False):
            cls.step = _with_step_hooks(step)

    _made_in_trace = None  # a weak reference to the tracer recording when it was made, if any

    def __init__(self, params, defaults):
        _LIVE[id(self)] = self
        if STATE.recorder is not None:
            self._made_in_trace = weakref.ref(STATE.recorder)
        self.defaults = defaults
        self._step_pre_hooks = OrderedDict()
        self._step_post_hooks = OrderedDict()
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {_type_name(params)}")
        self.state = defaultdict(dict)
        self.param_groups = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (e.g. a new layer when fine-tuning)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        else:
            param_group["params"] = list(params)
        for param in param_group["params"]:
            if not isinstance(param, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {_type_name(param)}")
            if not (param.is_leaf or param.retains_grad):
                raise ValueError(f"can't optimize a non-leaf Tensor (shape {list(param.shape)}, {param.dtype}, "
                                 f"grad_fn={param.grad_fn.name()}); optimize the leaf it was computed from")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)
        ids = [id(p) for p in param_group["params"]]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; in future, this will "
                          "cause an error; see github.com/pytorch/pytorch/issues/40967 for more information",
                          stacklevel=3)
        existing = {id(p) for group in self.param_groups for p in group["params"]}
        if not existing.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # ------------------------------------------------------------------ gradients and steps
    def zero_grad(self, set_to_none=True):
        """Reset the gradients: drop them (default) or, with set_to_none=False, zero them in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:  # (no read of .grad: None either way, so a traced program holds on no .grad state)
                    p.grad = None
                    continue
                grad = p.grad
                if grad is None:
                    continue
                if grad.grad_fn is not None:
                    grad.detach_()
                else:
                    grad.requires_grad_(False)
                grad.zero_()

    @_with_step_hooks
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure()'s loss if given.

        The built-in optimizers define only `_init_state(param, state, group)` and
        `_update(param, state, group)`; this evaluates the closure, then under no_grad gives every
        parameter with a gradient its state and its `_update`. A subclass written PyTorch's way
        overrides step itself."""
        if not hasattr(self, "_update"):
            raise NotImplementedError(f"{type(self).__name__} does not implement step(closure=None); an optimizer "
                                      f"subclass writes its update rule there")
        loss = self._evaluate_closure(closure)
        with no_grad():
            groups = [(group, self._params_with_grad(group)) for group in self.param_groups]
            for _, params in groups:  # (every group's gradients checked before any update)
                for param in params:
                    self._check_dense_grad(param)
            for group, params in groups:
                states = self._states_for(params, group)
                for param, state in zip(params, states):
                    self._update(param, state, group)
        return loss

    def _states_for(self, params, group):
        """The params' states, the missing ones made first, all before any update (as PyTorch's
        _init_group). While ember.compile traces the step, they are made eagerly, outside the
        program (as Dynamo runs _init_group): the first step then records the same program as
        every later one, which compiles at once, instead of a program that makes new state on
        every call. (An optimizer made inside the traced call keeps its state in the program.)"""
        recorder = STATE.recorder
        if recorder is None or (self._made_in_trace is not None and self._made_in_trace() is recorder):
            return [self._state_for(param, group) for param in params]
        states = []
        # (state made at this call's hyperparameters: a runtime scalar's value, not pinned)
        values = {key: _value_of(value) for key, value in group.items()}
        with in_mode(None):
            for param in params:
                made = not self.state.get(param)
                states.append(self._state_for(param, values))
                if made and states[-1]:
                    recorder.made_state(self, param, states[-1])
        return states

    def _state_for(self, param, group):
        """The parameter's state, created by `_init_state` on first use (also for groups added
        later with add_param_group)."""
        state = self.state[param]
        if len(state) == 0:
            self._init_state(param, state, group)
        return state

    @staticmethod
    def _evaluate_closure(closure):
        """The loss from `closure`, recomputed with gradients on (the step itself runs under no_grad)."""
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def _params_with_grad(self, group):
        return [p for p in group["params"] if p.grad is not None]

    def _check_dense_grad(self, param):
        """Before any update (PyTorch refuses such a .grad when it is assigned)."""
        if param.grad.dtype != param.dtype:
            raise RuntimeError(f"{type(self).__name__}.step: gradient of dtype {param.grad.dtype} does not match "
                               f"its parameter's dtype {param.dtype} (shape {list(param.shape)}); PyTorch refuses "
                               f"such a .grad when it is assigned")
        if param.grad.shape != param.shape:
            raise RuntimeError(f"{type(self).__name__}.step: gradient of shape {list(param.grad.shape)} does not "
                               f"match its parameter's shape {list(param.shape)} ({param.dtype})")

    def register_step_pre_hook(self, hook):
        """`hook(optimizer, args, kwargs)` runs before each step; it may return (new_args, new_kwargs)."""
        handle = RemovableHandle(self._step_pre_hooks)
        self._step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook):
        """`hook(optimizer, args, kwargs)` runs after each step."""
        handle = RemovableHandle(self._step_post_hooks)
        self._step_post_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ saving and loading
    def state_dict(self):
        """{'state': {param index: {name: value}}, 'param_groups': [group options with 'params' as
        index lists]}; indices count the parameters over all groups in order. Values are the live
        state (not copies), as in PyTorch."""
        index_of = {}
        next_index = 0

        def pack_group(group):
            nonlocal next_index
            packed = {key: value for key, value in group.items() if key != "params"}
            for p in group["params"]:
                if id(p) not in index_of:
                    index_of[id(p)] = next_index
                    next_index += 1
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            return packed

        param_groups = [pack_group(group) for group in self.param_groups]
        packed_state = {(index_of[id(key)] if isinstance(key, Tensor) else key): value
                        for key, value in self.state.items()}
        return {"state": packed_state, "param_groups": param_groups}

    def load_state_dict(self, state_dict):
        """Load a `state_dict()` saved from an optimizer over parameters of the same group sizes.
        The state is copied (and cast to each parameter's dtype, 'step' excepted); the groups'
        options are replaced by the saved ones."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("optimizer state_dict must be a dict with keys 'state' and 'param_groups'")
        groups = self.param_groups
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        param_of_index = dict(zip(itertools.chain.from_iterable(s["params"] for s in saved_groups),
                                  itertools.chain.from_iterable(g["params"] for g in groups)))
        state = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in param_of_index:
                param = param_of_index[key]
                state[param] = _cast_state(param, value)
            else:
                state[key] = copy.deepcopy(value)
        for group, saved in zip(groups, saved_groups):
            saved["params"] = group["params"]
        self.__setstate__({"state": state, "param_groups": saved_groups})

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        _LIVE[id(self)] = self
        self.__dict__.update(state)
        self.__dict__.setdefault("_step_pre_hooks", OrderedDict())
        self.__dict__.setdefault("_step_post_hooks", OrderedDict())
        for group in self.param_groups:  # options added after the state was saved get their defaults
            for name, default in self.defaults.items():
                if default is not required:
                    group.setdefault(name, default)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        return "\n".join(lines) + "\n)"


def _cast_state(param, value, key=None):
    """A private copy of one saved state entry, its tensors cast to `param`'s floating dtype
    (the step counter keeps its own dtype, as in PyTorch)."""
    if isinstance(value, Tensor):
        with no_grad():
            copied = value.detach().clone()
            if key != "step" and param.is_floating_point() and copied.is_floating_point():
                copied = copied.to(param.dtype)
            if key != "step" or copied.ndim:  # (PyTorch keeps a 0-d step on the host)
                copied = copied.to(param.device)
        return copied
    if isinstance(value, dict):
        return {k: _cast_state(param, v, key=k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_state(param, v, key=key) for v in value)
    return copy.deepcopy(value)


def _value_of(value):
    """A hyperparameter as a plain number where ember.compile made it a runtime scalar."""
    if type(value) is ScalarInput:
        return value.value
    if type(value) is tuple:
        return tuple(_value_of(v) for v in value)
    return value


_LIVE = weakref.WeakValueDictionary()  # id -> optimizer, for runtime scalars (frontend/runtime_scalars.py)


def live_optimizer(identity):
    """The optimizer whose id a compiled function's signature holds."""
    return _LIVE[identity]


def scalar_step_tensor():
    """A fresh step counter: a 0-d tensor of the default scalar dtype (float32, or float64 when
    that is the default), as PyTorch keeps 'step' in the state."""
    dtype = dtypes.float64 if dtypes.defaults.floating is dtypes.float64 else dtypes.float32
    return zeros((), dtype=dtype)


def check_hyperparameter(condition, message):
    """Raise PyTorch's ValueError for an invalid optimizer option."""
    if not condition:
        raise ValueError(message)
