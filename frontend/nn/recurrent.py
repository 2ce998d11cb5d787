"""Recurrent layers of ember.nn: RNN, LSTM, GRU and the one-step cells RNNCell, LSTMCell, GRUCell.

The time loop is plain Python over Tensor operations (matmul, add, sigmoid, tanh, slices,
cat/stack), so eager autograd differentiates it and the tracer records it as an unrolled
graph of matmuls and elementwise ops. Parameter names, shapes, gate order (LSTM i,f,g,o;
GRU r,z,n), initialisation and output shapes follow torch.nn, so state_dicts load either way.
"""
import math
import numbers
import warnings

from ember import dtypes
from ember.frontend.autograd import no_grad
from ember.frontend.creation import empty, zeros
from ember.frontend.math_ops import add, mul, relu, sigmoid, sub, tanh, where
from ember.frontend.shape_ops import cat, chunk, index_select, squeeze, stack, transpose, unbind, unsqueeze
from ember.frontend.tensor import Tensor
from .functional import dropout, linear
from .module import Module
from .parameter import Parameter


# ----------------------------------------------------------------------------- step functions
# Each step takes the input's gate pre-activations `gi` (x @ W_ih^T + b_ih, computed for the
# whole sequence at once by the layers), the previous state and the hidden-to-hidden
# weights, and returns the new state: a tensor for RNN and GRU, an (h, c) pair for LSTM.

def rnn_tanh_step(gi, h, w_hh, b_hh):
    return tanh(add(gi, linear(h, w_hh, b_hh)))


def rnn_relu_step(gi, h, w_hh, b_hh):
    return relu(add(gi, linear(h, w_hh, b_hh)))


def lstm_step(gi, state, w_hh, b_hh):
    """c' = f*c + i*g, h' = o*tanh(c'), with gates i, f, g, o in torch's order."""
    h, c = state
    i, f, g, o = chunk(add(gi, linear(h, w_hh, b_hh)), 4, dim=-1)
    c_next = add(mul(sigmoid(f), c), mul(sigmoid(i), tanh(g)))
    return mul(sigmoid(o), tanh(c_next)), c_next


def gru_step(gi, h, w_hh, b_hh):
    """r, z = sigmoid(.), n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), h' = n + z*(h - n)."""
    gh = linear(h, w_hh, b_hh)
    hidden = h.shape[-1]
    gi_rz, gi_n = _split_last(gi, 2 * hidden)
    gh_rz, gh_n = _split_last(gh, 2 * hidden)
    r, z = chunk(sigmoid(add(gi_rz, gh_rz)), 2, dim=-1)
    n = tanh(add(gi_n, mul(r, gh_n)))
    return add(n, mul(z, sub(h, n)))


def _split_last(x, at):
    return x[..., :at], x[..., at:]


def _hidden_of(state):
    return state[0] if isinstance(state, tuple) else state


# mode -> (step function, number of gates)
_MODES = {
    "RNN_TANH": (rnn_tanh_step, 1),
    "RNN_RELU": (rnn_relu_step, 1),
    "LSTM": (lstm_step, 4),
    "GRU": (gru_step, 3),
}


def run_sequence(step, x, state, w_ih, w_hh, b_ih, b_hh, w_hr=None, reverse=False, running=None):
    """Run one direction of one layer over x (T, B, features): returns (outputs (T, B, H), state).
    `running` (packed input): per step a (B, 1) bool tensor, True for the sequences still going;
    the others keep their state, so each final state is the one after its own last step (and a
    reverse pass starts at each sequence's own end). `w_hr` (LSTM proj_size): h is projected."""
    steps = unbind(linear(x, w_ih, b_ih), 0)
    outputs = [None] * len(steps)
    for t in (reversed(range(len(steps))) if reverse else range(len(steps))):
        new = step(steps[t], state, w_hh, b_hh)
        if w_hr is not None:
            new = (linear(new[0], w_hr), new[1])
        if running is not None:
            new = tuple(where(running[t], n, o) for n, o in zip(new, state)) if isinstance(new, tuple) \
                else where(running[t], new, state)
        state = new
        outputs[t] = _hidden_of(state)
    return stack(outputs, 0), state


# ----------------------------------------------------------------------------- helpers

def _short(t):
    return f"{t.dtype.short}[{','.join(str(d) for d in t.shape)}]"


def _init_uniform(params, hidden_size):
    """torch's reset_parameters: every weight and bias ~ U(-1/sqrt(hidden), 1/sqrt(hidden))."""
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    with no_grad():
        for p in params:
            p.uniform_(-bound, bound)


def _check_sizes(owner, input_size, hidden_size):
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{owner}: {name} should be of type int, got: {type(value).__name__}")
    if hidden_size <= 0:
        raise ValueError(f"{owner}: hidden_size must be greater than zero, got {hidden_size}")
    if input_size < 0:
        raise ValueError(f"{owner}: input_size must be non-negative, got {input_size}")


def _check_tensor(owner, what, value):
    if not isinstance(value, Tensor):
        raise TypeError(f"{owner}: {what} must be a Tensor, got {type(value).__name__}"
                        + (" (PackedSequence is not supported)" if type(value).__name__ == "PackedSequence" else ""))


# ----------------------------------------------------------------------------- sequence layers

class RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU: the layer stack, directions and state handling.

    `mode` is one of 'RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU' (as in torch). Parameters of layer k
    are weight_ih_lk (gates*hidden, in_features), weight_hh_lk (gates*hidden, hidden),
    bias_ih_lk, bias_hh_lk (gates*hidden), with a `_reverse` twin when bidirectional.
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(mode, mode)
        if mode not in _MODES:
            raise ValueError(f"RNNBase: unrecognized RNN mode {mode!r}; expected one of {list(_MODES)}")
        _check_sizes(name, input_size, hidden_size)
        if not isinstance(num_layers, numbers.Integral) or isinstance(num_layers, bool) or num_layers <= 0:
            raise ValueError(f"{name}: num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout should be a number in range [0, 1] representing the "
                             f"probability of an element being zeroed, got {dropout!r}")
        if not isinstance(proj_size, numbers.Integral) or proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = int(num_layers)
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self._step, gates = _MODES[mode]
        directions = 2 if bidirectional else 1
        gate_size = gates * hidden_size
        dtype = dtype if dtype is not None else dtypes.defaults.floating

        self._flat_weights_names = []
        self._all_weights = []
        real_hidden = proj_size or hidden_size  # the size of h (c keeps hidden_size)
        for layer in range(self.num_layers):
            layer_input = input_size if layer == 0 else real_hidden * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = [("weight_ih", (gate_size, layer_input)), ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                names = []
                for prefix, shape in shapes:
                    setattr(self, prefix + suffix, Parameter(empty(*shape, dtype=dtype, device=device)))
                    names.append(prefix + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self):
        _init_uniform(self.parameters(), self.hidden_size)

    def flatten_parameters(self):
        """torch packs weights into one cuDNN buffer here; ember's weights are already separate
        tensors in the layout the loop uses, so there is nothing to do."""

    @property
    def _flat_weights(self):
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self):
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def _layer_weights(self, layer, direction):
        """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer and direction (None where absent)."""
        names = self._all_weights[layer * (2 if self.bidirectional else 1) + direction]
        weights = [getattr(self, n) for n in names]
        projection = weights.pop() if self.proj_size else None
        return (weights if self.bias else weights + [None, None]) + [projection]

    @property
    def _name(self):
        return type(self).__name__

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # ---------------------------------------------------------------- forward
    # (RNN, LSTM and GRU define forward; RNNBase itself has none, as in PyTorch)

    def _run(self, input, hx=None):
        from .utils.rnn import PackedSequence
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        name = self._name
        _check_tensor(name, "input", input)
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D tensor {_short(input)}")
        batched = input.ndim == 3
        x = input if batched else unsqueeze(input, 1)
        if batched and self.batch_first:
            x = transpose(x, 0, 1)
        self._check_input(x, input)
        state = self._initial_state(hx, x, batched)
        x, final_state = self._layers(x, state)
        if batched and self.batch_first:
            x = transpose(x, 0, 1)
        if not batched:
            x = squeeze(x, 1)
            final_state = tuple(squeeze(s, 1) for s in final_state) if isinstance(final_state, tuple) \
                else squeeze(final_state, 1)
        return x, final_state

    def _layers(self, x, state, running=None):
        """Every layer and direction over x (T, B, features) from `state` (see _initial_state):
        (outputs (T, B, directions * H), final state (layers * directions, B, H), or a pair)."""
        directions = 2 if self.bidirectional else 1
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                start = tuple(part[index] for part in state) if len(state) == 2 else state[0][index]
                out, final = run_sequence(self._step, x, start, *self._layer_weights(layer, direction),
                                          reverse=direction == 1, running=running)
                outputs.append(out)
                finals.append(final)
            x = outputs[0] if directions == 1 else cat(outputs, 2)
            if layer < self.num_layers - 1:
                x = dropout(x, self.dropout, self.training)
        if isinstance(finals[0], tuple):
            return x, tuple(stack([f[k] for f in finals], 0) for k in range(len(finals[0])))
        return x, stack(finals, 0)

    def _forward_packed(self, packed, hx):
        """A PackedSequence in, a PackedSequence out (same batch_sizes and permutations), and the
        final state of each sequence after its own last step, in the caller's order."""
        from ember.frontend.creation import tensor
        from .utils.rnn import PackedSequence, packed_steps, padded_steps
        sizes = [int(v) for v in packed.batch_sizes.tolist()]
        x = padded_steps(packed.data, sizes, len(sizes))  # (T, B, features), longest first
        self._check_input(x, packed.data)
        if hx is not None and packed.sorted_indices is not None:  # the caller's order -> longest first
            hx = tuple(index_select(h, 1, packed.sorted_indices) for h in hx) if isinstance(hx, (tuple, list)) \
                else index_select(hx, 1, packed.sorted_indices)
        state = self._initial_state(hx, x, True)
        running = [tensor([[k < size] for k in range(sizes[0])]) for size in sizes]
        x, final_state = self._layers(x, state, running)
        if packed.unsorted_indices is not None:
            final_state = tuple(index_select(f, 1, packed.unsorted_indices) for f in final_state) \
                if isinstance(final_state, tuple) else index_select(final_state, 1, packed.unsorted_indices)
        output = PackedSequence(packed_steps(x, sizes), packed.batch_sizes, packed.sorted_indices,
                                packed.unsorted_indices)
        return output, final_state

    def _check_input(self, x, original):
        name = self._name
        if x.shape[0] == 0:
            raise ValueError(f"{name}: input {_short(original)} has a sequence length of 0")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input {_short(original)} has {x.shape[-1]} features in its last dim, "
                               f"expected input_size={self.input_size}")
        weight = self.weight_ih_l0
        if original.dtype is not weight.dtype:
            raise RuntimeError(f"{name}: input {_short(original)} has dtype {original.dtype.name} but the parameters "
                               f"are {weight.dtype.name}; convert the input or the module (.to(dtype))")

    def _initial_state(self, hx, x, batched):
        """hx split per layer and direction: [h_0 parts] or [h_0 parts, c_0 parts]; zeros when not given."""
        name = self._name
        count = self.num_layers * (2 if self.bidirectional else 1)
        parts = 2 if self.mode == "LSTM" else 1
        shapes = [(count, x.shape[1], self.proj_size or self.hidden_size), (count, x.shape[1], self.hidden_size)]
        if hx is None:
            state = [zeros(*shapes[k], dtype=x.dtype) for k in range(parts)]
        else:
            if parts == 2 and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            state = list(hx) if parts == 2 else [hx]
            labels = ("h_0", "c_0") if parts == 2 else ("hx",)
            for label, s in zip(labels, state):
                _check_tensor(name, label, s)
                if s.ndim != (3 if batched else 2):
                    raise RuntimeError(f"{name}: for {'batched 3-D' if batched else 'unbatched 2-D'} input, "
                                       f"{label} should also be {3 if batched else 2}-D but got "
                                       f"{s.ndim}-D tensor {_short(s)}")
            state = [s if batched else unsqueeze(s, 1) for s in state]
            for label, s, expected in zip(labels, state, shapes):
                if tuple(s.shape) != expected:
                    shown = expected if batched else (expected[0], expected[2])
                    raise RuntimeError(f"{name}: expected {label} of shape {list(shown)}, got {_short(s)}")
                if s.dtype is not x.dtype:
                    raise RuntimeError(f"{name}: {label} has dtype {s.dtype.name} but the input is {x.dtype.name}")
        return [unbind(s, 0) for s in state]


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, proj_size, device=device,
                         dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        return self._run(input, hx)


class LSTM(RNNBase):
    """Long short-term memory: returns output, (h_n, c_n); gates i, f, g, o in torch's order."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        return self._run(input, hx)


class GRU(RNNBase):
    """Gated recurrent unit: returns output, h_n; gates r, z, n in torch's order."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        return self._run(input, hx)


# ----------------------------------------------------------------------------- cells

class RNNCellBase(Module):
    """One time step: weight_ih (gates*hidden, input), weight_hh (gates*hidden, hidden), biases."""

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None):
        super().__init__()
        _check_sizes(type(self).__name__, input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        dtype = dtype if dtype is not None else dtypes.defaults.floating
        gate_size = num_chunks * hidden_size
        self.weight_ih = Parameter(empty(gate_size, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(empty(gate_size, hidden_size, dtype=dtype, device=device))
        if bias:
            self.bias_ih = Parameter(empty(gate_size, dtype=dtype, device=device))
            self.bias_hh = Parameter(empty(gate_size, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        _init_uniform(self.parameters(), self.hidden_size)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def _run(self, step, input, hx, parts):
        """Check shapes, add the batch dim for unbatched input, take one step, remove it again."""
        name = type(self).__name__
        _check_tensor(name, "input", input)
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D tensor {_short(input)}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input {_short(input)} has {input.shape[-1]} features, "
                               f"expected input_size={self.input_size}")
        if input.dtype is not self.weight_ih.dtype:
            raise RuntimeError(f"{name}: input {_short(input)} has dtype {input.dtype.name} but the parameters "
                               f"are {self.weight_ih.dtype.name}; convert the input or the module (.to(dtype))")
        batched = input.ndim == 2
        x = input if batched else unsqueeze(input, 0)
        if hx is None:
            state = [zeros(x.shape[0], self.hidden_size, dtype=x.dtype) for _ in range(parts)]
        else:
            state = list(hx) if parts == 2 else [hx]
            for s in state:
                _check_tensor(name, "hidden state", s)
                if s.ndim != input.ndim:
                    raise RuntimeError(f"{name}: Expected hidden state to be {input.ndim}D like the input "
                                       f"{_short(input)}, got {_short(s)}")
                if tuple(s.shape[-1:]) != (self.hidden_size,) or (batched and s.shape[0] != x.shape[0]):
                    raise RuntimeError(f"{name}: hidden state {_short(s)} does not match input {_short(input)} "
                                       f"and hidden_size={self.hidden_size}")
                if s.dtype is not x.dtype:
                    raise RuntimeError(f"{name}: hidden state has dtype {s.dtype.name} but the input is {x.dtype.name}")
            state = [s if batched else unsqueeze(s, 0) for s in state]
        gi = linear(x, self.weight_ih, self.bias_ih)
        out = step(gi, tuple(state) if parts == 2 else state[0], self.weight_hh, self.bias_hh)
        if batched:
            return out
        return tuple(squeeze(o, 0) for o in out) if parts == 2 else squeeze(out, 0)


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: Unknown nonlinearity: {nonlinearity}. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        step = rnn_tanh_step if self.nonlinearity == "tanh" else rnn_relu_step
        return self._run(step, input, hx, parts=1)


class LSTMCell(RNNCellBase):
    """One LSTM step: returns (h', c'); hx is an optional (h, c) pair."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        return self._run(lstm_step, input, hx, parts=2)


class GRUCell(RNNCellBase):
    """One GRU step: returns h'."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        return self._run(gru_step, input, hx, parts=1)
