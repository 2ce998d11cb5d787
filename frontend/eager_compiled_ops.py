"""Eager mode's erf and erfc on large tensors: the compiled code of the primitive run over chunks.

numpy has no erf, so the primitives' numpy implementations (ember/ops/elementwise.py) call libm
once per element through np.frompyfunc: about 90 ns per element, 40% of an eager GPT step with
exact GELU. Here a tensor of at least SMALL elements goes through the program ember.compile
builds for the same primitive (its vectorised polynomial, compiler/llvm/math.py) on one chunk of
CHUNK elements, compiled once and kept in the compile cache: about 2.5 ns per element. float32
results are within 1 ulp of libm's correctly rounded value (erfc's exactly rounded), as in
compiled code and PyTorch's vectorised erf. Smaller tensors, other dtypes (float64 keeps libm's
0.5 ulp) and machines where the compiler cannot run keep the numpy implementation (the IR
interpreter always does: it stays the reference). dispatch.eager_bind consults COMPILED_FOR_EAGER.
"""
import threading

import numpy as np

from .eager_convolutions import CONVOLUTIONS_FOR_EAGER

SMALL = 4096  # fewer elements: libm per element (exactly rounded, and no chunk to fill)
CHUNKS = (1 << 16, SMALL)  # elements per call of the two programs: the big one, then the rest by SMALL
CHUNK = CHUNKS[0]
_DTYPES = (np.dtype(np.float32),)  # (float64 keeps libm: its compiled polynomials are within 4 ulp, not 0.5)


class ChunkedKernel:
    """A unary elementwise primitive's compiled programs over CHUNKS elements, applied chunk by
    chunk (`_run_in_chunks`), per dtype; the numpy implementation where they cannot run."""

    def __init__(self, name):
        self.name = name
        self.programs = {}  # dtype -> [(runner, [input node], output node) per chunk size], or None
        self.lock = threading.Lock()  # one call of a program at a time (it holds one pointer table)

    def __call__(self, x):
        from ember.ops import PRIMITIVES
        if x.size < SMALL or x.dtype not in _DTYPES:
            return PRIMITIVES[self.name].impl(x)
        program = self.programs.get(x.dtype, False)
        if program is False:
            program = self.programs[x.dtype] = self._compile(x.dtype)
        if program is None:
            return PRIMITIVES[self.name].impl(x)
        with self.lock:  # (threads calling erf at once would overwrite each other's pointers)
            return _run_in_chunks(program, (x,))

    def _compile(self, dtype):
        """[(runner, [input node], output node)] of the one-op program per chunk size, or None where
        the compiler cannot build or load them here (no llvmlite, a read-only cache...): numpy
        then serves."""
        try:
            from ember.compiler.backends import llvm_backend
            from ember.ir import Graph
            backend = llvm_backend(debug=0)  # (no per-kernel timing output)
            programs = []
            for size in CHUNKS:
                graph = Graph(f"eager_{self.name}_{dtype.name}_{size}")
                source = graph.add_input((size,), dtype.name, "x")
                result = graph.add_node(self.name, [source], (size,), dtype.name, {}, self.name)
                graph.outputs = [result]
                programs.append((_on_the_calling_thread(backend.compile(graph)), [source], result))
            return programs
        except Exception:  # (correct results either way: the numpy implementation is the fallback)
            return None


def _run_in_chunks(programs, arrays):
    """The programs' output over arrays of one shape: big chunks first, then SMALL ones, the last
    padded with zeros (a GPT's generation step pads at most SMALL - 1 elements), laid out as the
    first array is (a transposed input gives a transposed result, as in PyTorch). `programs`:
    [(runner, input nodes, output node)] per size in CHUNKS; the caller holds their lock."""
    flats = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    total = flats[0].size
    out = np.empty(total, dtype=flats[0].dtype)
    start = 0
    for size, (run, sources, result) in zip(CHUNKS, programs):
        while total - start >= size:
            out[start:start + size] = run({n: f[start:start + size] for n, f in zip(sources, flats)}, {})[result]
            start += size
    if start < total:
        run, sources, result = programs[-1]
        padded = {}
        for n, f in zip(sources, flats):
            padded[n] = np.zeros(SMALL, dtype=f.dtype)
            padded[n][:total - start] = f[start:]
        out[start:] = run(padded, {})[result][:total - start]
    out = out.reshape(arrays[0].shape)
    if not arrays[0].flags.c_contiguous:  # the result in the input's layout, as numpy's ufuncs give it
        like = np.empty_like(arrays[0])
        like[...] = out
        return like
    return out


def _on_the_calling_thread(runner):
    """Eager mode's chunk programs run on the calling thread: between eager matmuls, libgomp's
    threads (spinning after each parallel loop) and numpy's BLAS threads fought over the cores
    (an eager GPT step at 2 threads: 84 ms with parallel chunks, 67 with these)."""
    runner.fixed_threads = 1
    return runner


COMPILED_FOR_EAGER = {name: ChunkedKernel(name) for name in ("erf", "erfc")}
COMPILED_FOR_EAGER.update(CONVOLUTIONS_FOR_EAGER)  # (conv2d and its gradients: the support library's kernels)


class ChunkedProgram:
    """An elementwise function of float32 arrays of one shape (`fn`, written with ember ops)
    traced and compiled over each of CHUNKS elements, then applied chunk by chunk like
    ChunkedKernel: eager mode's GELU and its derivative (frontend/nn/functional.py) in one pass
    over memory, where the composed primitives take five passes forward and nine backward
    (13 of an eager GPT step's 80 ms). `__call__` returns None where compiled code cannot
    run here: the caller composes primitives instead."""

    def __init__(self, name, fn, arity):
        self.name, self.fn, self.arity = name, fn, arity
        self.programs = False  # [(runner, input nodes, output node) per chunk size], None: unavailable
        self.lock = threading.Lock()

    def applies(self, *arrays):
        return arrays[0].size >= SMALL and all(a.dtype == _DTYPES[0] and a.shape == arrays[0].shape for a in arrays)

    def __call__(self, *arrays):
        with self.lock:  # (one call of a program at a time: it holds one pointer table)
            if self.programs is False:
                self.programs = self._compile()
            if self.programs is None:
                return None
            return _run_in_chunks(self.programs, arrays)

    def _compile(self):
        try:
            from ember.compiler.backends import llvm_backend
            from .autograd import no_grad
            from .tensor import Tensor
            from .trace_function import trace
            backend = llvm_backend(debug=0)
            programs = []
            for size in CHUNKS:
                with no_grad():
                    graph = trace(self.fn, *[Tensor._wrap(np.zeros(size, np.float32)) for _ in range(self.arity)])
                graph.name = f"eager_{self.name}_{size}"
                programs.append((_on_the_calling_thread(backend.compile(graph)), list(graph.inputs), graph.outputs[0]))
            return programs
        except Exception:  # (correct results either way: composed primitives are the fallback)
            return None
