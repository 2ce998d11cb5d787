"""`ember.export_library`: a model traced for inference and handed to the compiler's export back
end (compiler/export/library.py), which writes a C library that runs it without Python.

The model is traced under no_grad like `ember.trace`. A static export compiles one program at
the example inputs' shapes. With `dynamic_batch=True` the model is traced again at a ladder of
batch sizes (1, 2, 4, ... up to the example's batch, at least 8) and at 3 and 4N+3 (only to
compare); passes/batch_axes.py checks that these are one program whose batch rows never mix,
and the library runs any batch as chunks of the ladder's sizes. (Python code that changes
what it computes only beyond the sizes traced cannot be seen; without symbolic shapes the
trace sees numbers.) What a library cannot do is refused with the reason: Python callbacks
(host-only ops), random numbers, writes to inputs or weights, values read back into Python.
"""
import re

import numpy as np

from ember.passes.batch_axes import BatchDependence, batch_axes
from .autograd import no_grad
from .tensor import Tensor
from .signatures import input_name
from .trace_function import trace_with_values

MIN_LARGEST_CHUNK = 8


def export_library(model_or_fn, example_inputs, path, *, dynamic_batch=False, target="cpu", weights="embed",
                   cpu="host", name=None, threads=None):
    """Compile `model_or_fn` at `example_inputs` (a tensor or a tuple of them) into the directory
    `path`: NAME.so, NAME.h, manifest.json, README, and NAME.safetensors when `weights="file"`.
    `dynamic_batch`: the library takes any batch size (dim 0 of every input and output).
    `cpu`: "host", or an x86-64 level ("x86-64-v3", "generic-x86-64-v3", ...) to run on every
    machine of that class. Returns the paths written."""
    from ember.compiler.export.library import ExportError, build_library, c_identifier
    if target != "cpu":
        raise ExportError(f"export_library: target={target!r}; ember exports for the CPU only (target='cpu')")
    if cpu not in (None, "host"):
        from ember.compiler.cpu.host import level_features
        try:
            level_features(cpu)
        except ValueError as error:
            raise ExportError(f"export_library: {error}") from None
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        kinds = ", ".join(type(t).__name__ for t in inputs) or "nothing"
        raise ExportError(f"export_library: example_inputs must be ember tensors (one, or a tuple), got {kinds}")
    if name is not None and not (isinstance(name, str) and re.fullmatch(r"[A-Za-z_]\w*", name)):
        raise ExportError(f"export_library: name={name!r} must be a C identifier (letters, digits, _)")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ExportError(f"export_library: threads={threads!r}; give a whole number >= 1 (or None: "
                          f"EMBER_NUM_THREADS)")
    label = name or c_identifier(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", getattr(model_or_fn, "__name__", None)
                                        or type(model_or_fn).__name__).lower())
    if dynamic_batch:
        programs, params = _dynamic_batch_programs(model_or_fn, inputs, label)
    else:
        graph, params = _trace(model_or_fn, inputs, label)
        programs = [(inputs[0].shape[0] if inputs[0].ndim else 1, graph)]
    names = [input_name(model_or_fn, f"args[0][{k}]") for k in range(len(inputs))]
    return build_library(label, programs, params, path, dynamic=dynamic_batch, weights=weights, cpu=cpu,
                         threads=threads, input_names=names)


def _dynamic_batch_programs(fn, inputs, label):
    """[(batch size, graph)] of the ladder, largest first, and the params, after proving that the
    traces are one program whose rows never mix (passes/batch_axes.py) and that the tensors the
    model reads do not change with the batch."""
    from ember.compiler.export.library import ExportError
    batches = {t.shape[0] if t.ndim else None for t in inputs}
    if None in batches or 0 in batches or len(batches) > 1:
        shapes = ", ".join(str(list(t.shape)) for t in inputs)
        raise ExportError(f"export_library({label}, dynamic_batch=True): every input must have the same batch "
                          f"(>= 1) as its first dim; the example inputs have shapes {shapes}")
    largest = 1 << max(inputs[0].shape[0], MIN_LARGEST_CHUNK).bit_length() - 1
    ladder = [1 << k for k in range(largest.bit_length() - 1, -1, -1)]
    # two more sizes, traced only to be compared: Python code that uses the batch size where
    # the ladder's powers of two would not show it (x.shape[0] % 2, > 8...)
    sizes = ladder + [3, 4 * largest + 3]
    traced = []
    for size in sizes:
        try:
            traced.append(_trace(fn, _with_batch(inputs, size), label))
        except ExportError:
            raise
        except Exception as error:
            raise ExportError(f"export_library({label}, dynamic_batch=True): the model fails at batch {size} "
                              f"(ember traces it at {', '.join(map(str, sizes))} to prove the batch dynamic): "
                              f"{type(error).__name__}: {error}") from error
    (biggest, params), check = traced[0], traced[-1]
    try:
        for size, (graph, values) in zip(sizes[1:], traced[1:]):
            pair = (check[0], biggest, (sizes[-1], sizes[0])) if graph is check[0] else \
                (biggest, graph, (sizes[0], size))
            axes = batch_axes(*pair)
            changed = [n for n in params if n not in values or not np.array_equal(params[n], values[n])]
            if changed or set(values) != set(params):
                raise BatchDependence(f"the tensor {(changed or sorted(set(values) ^ set(params)))[0]!r} the model "
                                      f"reads is another one at batch {size}")
        axes = batch_axes(biggest, traced[1][0], (sizes[0], sizes[1]))
        unbatched = [k for k, node in enumerate(biggest.outputs) if axes[node] != 0]
        if unbatched:
            raise BatchDependence(f"output {unbatched[0]} {list(biggest.node(biggest.outputs[unbatched[0]]).shape)}"
                                  f" does not carry the batch along its first dim")
    except BatchDependence as error:
        raise ExportError(f"export_library({label}, dynamic_batch=True): rows of a batch must be computed apart "
                          f"for a dynamic batch, and here they are not: {error}") from None
    return [(size, graph) for size, (graph, _) in zip(ladder, traced)], params


def _with_batch(inputs, size):
    """The example inputs with `size` rows (their rows repeated or cut)."""
    from .creation import from_numpy
    return tuple(from_numpy(np.ascontiguousarray(np.resize(t.numpy(), (size,) + tuple(t.shape[1:])))) for t in inputs)


def _trace(fn, inputs, label):
    """(graph, {param name: ndarray}) of `fn(*inputs)` traced for inference; ExportError for what a
    library cannot reproduce."""
    from ember.compiler.export.library import ExportError
    with no_grad():
        graph, values = trace_with_values(fn, tuple(inputs), name=label)
    if not graph.outputs:
        raise ExportError(f"export_library({label}): the model returned no tensors")
    graph.verify()
    if graph.mutations:
        written = ", ".join(f"{m.kind} {m.target!r}" for m in graph.mutations)
        raise ExportError(f"export_library({label}): the model writes to {written} while it runs (BatchNorm in "
                          f"training mode, an in-place op on an input?); an exported library keeps its weights "
                          f"fixed: call model.eval() first, or avoid the write")
    if graph.guards:
        raise ExportError(f"export_library({label}): the model's Python code reads tensor values "
                          f"({graph.guards[0].describe()}); an exported library cannot run that Python: "
                          f"compute the condition with tensor ops (torch.where) instead")
    random = [n for n in graph.nodes() if n.op == "random"]
    if random:
        where = f" at {random[0].source}" if getattr(random[0], "source", "") else ""
        raise ExportError(f"export_library({label}): the model draws random numbers (%{random[0].id} "
                          f"{random[0].name}{where}: dropout in training mode?); call model.eval() first")
    missing = [p for p in graph.params if p not in values]
    if missing:
        raise ExportError(f"export_library({label}): no value for the tensor(s) {', '.join(missing)}")
    return graph, values
