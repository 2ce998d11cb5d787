"""The CPU support library programs call: sgemm.py's sgemm and conv.py's convolutions, in pieces.

Each piece (`sgemm`, `conv2d`, `conv2d_grad_input`, `conv2d_grad_weight`, and the `_direct`
variants of the convolutions: their direct path alone) is compiled at O2 on first use into
its own cached object, and a program gets only the pieces its kernels call (`pieces_for`):
the seed Net's inference needs conv2d_direct alone, not sgemm nor the gradient kernels
(which cost as much LLVM time again). The general convolution pieces call sgemm from the
sgemm piece instead of carrying a copy. A program is either linked with its pieces
into one shared library (cpu/target.py) or, without a C compiler, loaded by MCJIT after its
pieces (`register_with_mcjit`). A cold compile builds missing pieces in forked processes on
the other CPUs while it compiles the program (`compiled_alongside`).
"""
import contextlib
import os
import signal
import threading
import time
import warnings

from .. import compile_cache
from .. import loop_ir as L
from . import host

SGEMM = "sgemm"
CONV_PIECES = L.CONV_KINDS
DIRECT_PIECES = tuple(kind + L.DIRECT_SUFFIX for kind in CONV_PIECES)  # the direct path alone: no sgemm
PIECES = (SGEMM, *CONV_PIECES, *DIRECT_PIECES)
def _base_kind(piece):
    """conv2d_direct -> conv2d."""
    return piece[:-len(L.DIRECT_SUFFIX)]


PIECE_ROLES = {
    SGEMM: "ember_sgemm, the packed, register-blocked matmul (compiler/cpu/sgemm.py)",
    "conv2d": "ember_conv2d, direct or im2col convolution on the sgemm microkernel (compiler/cpu/conv.py)",
    "conv2d_grad_input": "ember_conv2d_grad_input (compiler/cpu/conv.py)",
    "conv2d_grad_weight": "ember_conv2d_grad_weight (compiler/cpu/conv.py)",
    **{piece: f"ember_{piece}, the direct path of ember_{_base_kind(piece)} alone (compiler/cpu/conv.py)"
       for piece in DIRECT_PIECES},
}


def pieces_for(kernels):
    """The pieces lowered kernels call, sgemm first (the convolutions call it too)."""
    needed = set()
    for kernel in kernels:
        for stmt in L.walk_statements(kernel.body):
            if isinstance(stmt, L.Gemm):
                needed.add(SGEMM)
            elif isinstance(stmt, L.ConvCall):
                needed.update((stmt.kind,) if stmt.kind in DIRECT_PIECES else (SGEMM, stmt.kind))
    return [piece for piece in PIECES if piece in needed]


def pieces_expected(graph, fusion):
    """The pieces a planned graph's kernels will call, known before lowering so that their
    compilation can start at once: a float32 convolution calls its piece (and sgemm), and so
    does a float32 matmul too big for loops and with more rows than a dot product. Lowering
    decides (`pieces_for`); a piece expected wrongly is compiled for nothing, one missed is
    compiled later."""
    from ..lowering_contractions import DOT_PRODUCT_ROWS, GEMM_MIN_WORK
    from ember.ir.symbols import hint
    needed = set()
    for group in fusion.groups:
        node = graph.node(group.anchor)
        if node.dtype != "float32" or 0 in node.shape:
            continue
        if node.op in CONV_PIECES:
            needed.update(_conv_pieces(graph, node))
        elif node.op == "matmul":
            m, n = hint(node.shape[-2:])  # (as lowering estimates a symbolic size)
            k = hint(graph.node(node.inputs[0]).shape[-1])
            if m * n * k >= GEMM_MIN_WORK and m > DOT_PRODUCT_ROWS:
                needed.add(SGEMM)
    return [piece for piece in PIECES if piece in needed]


def _conv_pieces(graph, node):
    """The pieces a convolution node's kernel calls (as lowering_contractions.conv_call picks)."""
    from .conv import direct_kernel_applies
    attrs = node.attrs
    weight_shape = attrs["weight_shape"] if node.op == "conv2d_grad_weight" else graph.node(node.inputs[1]).shape
    if direct_kernel_applies(node.op, tuple(weight_shape[2:]), attrs["stride"], attrs["padding"], attrs["dilation"]):
        return (node.op + L.DIRECT_SUFFIX,)
    return (SGEMM, node.op)


def exported_symbols(piece):
    """The symbols a piece defines for programs (and other pieces) to call."""
    from .program import CONV_SYMBOLS, SGEMM_SYMBOL
    from .sgemm import SGEMM_NAME
    return [SGEMM_SYMBOL, SGEMM_NAME] if piece == SGEMM else [CONV_SYMBOLS[piece]]


# LLVM's pipeline per piece: O2, but O1 where it gives the same speed (the direct convolution:
# its loops are vectorised by hand) and compiles about a fifth faster, on a cold compile's
# critical path (the seed Net's inference waits for conv2d_direct alone)
OPT_LEVELS = {"conv2d_direct": 1, "conv2d_grad_input_direct": 1}


def piece_key(piece, parallel):
    return compile_cache.cache_key("support", piece, host.target_key(), compile_cache.code_generator_sources(),
                                   f"parallel={parallel}", f"O{OPT_LEVELS.get(piece, 2)}")


def piece_object(piece, cache, parallel):
    """Object code of one piece, from the cache or compiled (and stored) now."""
    key = piece_key(piece, parallel)
    object_code = cache.load(key)
    if object_code is None:
        object_code = host.host_target_machine().emit_object(optimized_piece(piece, parallel))
        cache.store(key, object_code)
    return object_code


def optimized_piece(piece, parallel):
    """One piece as an optimised llvmlite ModuleRef (at OPT_LEVELS: its hot loops are vectorised by hand)."""
    llvm = host.llvm_binding()
    module_ref = llvm.parse_assembly(str(piece_module(piece, parallel)))
    module_ref.verify()
    return host.optimize_module(module_ref, opt=OPT_LEVELS.get(piece, 2))


def piece_text(piece, parallel, stage):
    """The optimised LLVM IR ("llvm") or assembly ("asm") of one piece, under a comment line
    saying what it is (for `ember dump --stage llvm|asm`)."""
    module_ref = optimized_piece(piece, parallel)
    comment = ";" if stage == "llvm" else "#"
    header = f"{comment} ---- support library piece {piece!r}: {PIECE_ROLES[piece]} ----\n"
    if stage == "llvm":
        return header + str(module_ref)
    return header + host.host_target_machine().emit_assembly(module_ref)


def piece_module(piece, parallel):
    """The llvmlite ir.Module of one piece; a convolution's copy of sgemm becomes a declaration."""
    from . import conv, sgemm
    if piece not in PIECES:
        raise ValueError(f"unknown support library piece {piece!r}; pieces: {', '.join(PIECES)}")
    module = host.new_module(f"ember_support_{piece}")
    if piece == SGEMM:
        sgemm.define_sgemm(module, parallel=parallel)
        return module
    if piece in DIRECT_PIECES:
        conv.define_conv2d(module, _base_kind(piece), parallel=parallel, direct_only=True)
        return module
    conv.define_conv2d(module, piece, parallel=parallel)
    _declare_only(module, exported_symbols(SGEMM))
    return module


def _declare_only(module, names):
    """Turn the functions `names` into declarations and drop the internal functions nothing
    calls any more (sgemm's helpers: what a linker would take from another object)."""
    for name in names:
        module.globals[name].blocks = []
    while True:
        used = set()
        for function in module.functions:
            for block in function.blocks:
                for instruction in block.instructions:
                    used.update(id(operand) for operand in getattr(instruction, "operands", ()))
        dead = [f.name for f in module.functions
                if f.blocks and f.linkage in ("internal", "private") and id(f) not in used]
        if not dead:
            return
        for name in dead:
            del module.globals[name]


# ----------------------------------------------------------------------------- compiling beside the program

# rough LLVM cost of a piece, against 1 for sgemm (about 0.35 s here), and of a program's kernel
PIECE_WEIGHTS = {SGEMM: 1.0, "conv2d": 1.3, "conv2d_grad_input": 1.5, "conv2d_grad_weight": 1.5,
                 **{piece: 1.0 for piece in DIRECT_PIECES}}
KERNEL_WEIGHT = 0.05
PATIENCE_SECONDS = 20.0  # at least this long for a child, before this process compiles its pieces itself


@contextlib.contextmanager
def compiled_alongside(pieces, cache, parallel, kernels):
    """Fork a process per spare CPU to compile the missing `pieces` while the caller's block
    compiles a program of `kernels` kernels (llvmlite runs one LLVM call at a time per
    process). Yields `Helpers`: the caller compiles the pieces not in `helpers.pieces`, then
    calls `helpers.wait()`, after which `piece_object` finds the others in the cache (or
    compiles one itself, if its child failed or took far longer than the caller's own work).
    Children still running on leaving the block are killed."""
    host.llvm_binding()  # initialised and imported here, not in every child
    from . import conv, sgemm  # noqa: F401
    missing = [p for p in pieces if not os.path.exists(cache.path(piece_key(p, parallel)))]
    helpers = Helpers(_fork_children(_share_out(missing, kernels), cache, parallel), cache)
    try:
        yield helpers
    finally:
        for pid, _ in helpers.children:
            _reap(pid, kill=True)


class Helpers:
    """Forked children compiling pieces: `children` [(pid, pieces)], `pieces` all handed off,
    into `cache`."""

    def __init__(self, children, cache):
        self.children, self.cache = children, cache
        self.pieces = [piece for _, share in children for piece in share]
        self.started = time.perf_counter()

    def wait(self):
        """Until every child is done, or PATIENCE_SECONDS (at least 3x the time since they
        started) have passed."""
        deadline = self.started + max(PATIENCE_SECONDS, 3 * (time.perf_counter() - self.started))
        while self.children and time.perf_counter() < deadline:
            self.children = [child for child in self.children if not _reap(child[0])]
            if self.children:
                time.sleep(0.002)


def _share_out(missing, kernels):
    """Pieces per child (the heaviest first, each to the least loaded worker, this process
    starting with its program's weight): one child per CPU that neither this process nor any
    other running task occupies now; none without fork. On a busy machine
    a child only competes with this process (measured: 2 CPUs at load 1.5-2, the seed Net's
    cold compile 0.85 s with a child against 0.77 s without; 0.5-0.6 s with one on an idle one)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    spare = min(cpus - _busy_cpus(), cpus - 1, len(missing))
    # a fork while another thread may hold a lock (malloc's, LLVM's) could leave the child stuck
    # until the parent gives up on it: only single-threaded processes fork
    if not hasattr(os, "fork") or spare < 1 or threading.active_count() > 1:
        return []
    loads = [KERNEL_WEIGHT * kernels] + [0.0] * spare
    shares = [[] for _ in loads]
    for piece in sorted(missing, key=lambda p: -PIECE_WEIGHTS[p]):
        worker = loads.index(min(loads))
        loads[worker] += PIECE_WEIGHTS[piece]
        shares[worker].append(piece)
    return [share for share in shares[1:] if share]


def _busy_cpus():
    """CPUs busy right now, this process included: the kernel's count of runnable tasks
    (/proc/loadavg's fourth field), not the 1-minute load average, which still counts work
    that ended a minute ago (a benchmark's previous section, the previous test). Without
    /proc, the load average rounded up, plus this process."""
    try:
        with open("/proc/loadavg") as f:
            return max(1, int(f.read().split()[3].split("/")[0]))
    except (OSError, ValueError, IndexError):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return 1 + int(load + 0.5)


def _fork_children(shares, cache, parallel):
    children = []
    for share in shares:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12: fork of a threaded process
                pid = os.fork()
        except OSError:  # no memory or processes to spare: this process compiles the share
            continue
        if pid == 0:  # the child: compile, store, leave without running any of the parent's exit code
            status = 1
            try:
                warnings.simplefilter("ignore")
                for piece in share:
                    piece_object(piece, cache, parallel)
                status = 0
            finally:
                os._exit(status)
        children.append((pid, share))
    return children


def _reap(pid, kill=False):
    """True once the child `pid` is gone (killed first if `kill`)."""
    try:
        if kill:
            os.kill(pid, signal.SIGKILL)
        done, _ = os.waitpid(pid, 0 if kill else os.WNOHANG)
        return done != 0
    except (ChildProcessError, ProcessLookupError):
        return True


# ----------------------------------------------------------------------------- MCJIT

_MCJIT_LOCK = threading.Lock()
_MCJIT_PIECES = {}  # piece -> its MCJIT engine (process-wide: its symbols are registered with LLVM)


def register_with_mcjit(pieces, cache, parallel):
    """Load the pieces' objects with MCJIT (once per process) and register their symbols, so
    object code loaded by MCJIT afterwards links to them."""
    from ember.runtime.cpu_program import load_object
    with _MCJIT_LOCK:
        for piece in pieces:
            if piece in _MCJIT_PIECES:
                continue
            llvm = host.llvm_binding()
            symbols = exported_symbols(piece)
            engine, _ = load_object(piece_object(piece, cache, parallel), host.new_host_target_machine(),
                                    symbols[0])
            for symbol in symbols:
                llvm.add_symbol(symbol, engine.get_function_address(symbol))
            _MCJIT_PIECES[piece] = engine
