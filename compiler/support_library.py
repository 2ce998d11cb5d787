"""The support library programs call: llvm_matmul's sgemm and llvm_conv's convolutions, in pieces.

Each piece (`sgemm`, `conv2d`, `conv2d_grad_input`, `conv2d_grad_weight`) is compiled at O3
on first use into its own cached object, and a program gets only the pieces its kernels call
(`pieces_for`): an inference program with convolutions needs sgemm and conv2d, not the two
gradient kernels (which cost as much LLVM time again). The convolution pieces call sgemm
from the sgemm piece instead of carrying a copy. A program is either linked with its pieces
into one shared library (llvm_backend) or, without a C compiler, loaded by MCJIT after its
pieces (`register_with_mcjit`).
"""
import threading

from . import compile_cache, llvm_target
from . import loop_ir as L

SGEMM = "sgemm"
CONV_PIECES = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")
PIECES = (SGEMM, *CONV_PIECES)


def pieces_for(kernels):
    """The pieces lowered kernels call, sgemm first (the convolutions call it too)."""
    needed = set()
    for kernel in kernels:
        for stmt in L.walk_statements(kernel.body):
            if isinstance(stmt, L.Gemm):
                needed.add(SGEMM)
            elif isinstance(stmt, L.ConvCall):
                needed.update((SGEMM, stmt.kind))
    return [piece for piece in PIECES if piece in needed]


def exported_symbols(piece):
    """The symbols a piece defines for programs (and other pieces) to call."""
    from .llvm_cpu import CONV_SYMBOLS, SGEMM_SYMBOL
    from .llvm_matmul import SGEMM_NAME
    return [SGEMM_SYMBOL, SGEMM_NAME] if piece == SGEMM else [CONV_SYMBOLS[piece]]


def piece_object(piece, cache, parallel):
    """Object code of one piece, from the cache or compiled (and stored) now."""
    key = compile_cache.cache_key("support", piece, llvm_target.target_key(), compile_cache.code_generator_sources(),
                                  f"parallel={parallel}")
    object_code = cache.load(key)
    if object_code is None:
        llvm = llvm_target.llvm_binding()
        module_ref = llvm.parse_assembly(str(piece_module(piece, parallel)))
        module_ref.verify()
        llvm_target.optimize_module(module_ref, opt=3)
        object_code = llvm_target.host_target_machine().emit_object(module_ref)
        cache.store(key, object_code)
    return object_code


def piece_module(piece, parallel):
    """The llvmlite ir.Module of one piece; a convolution's copy of sgemm becomes a declaration."""
    from . import llvm_conv, llvm_matmul
    if piece not in PIECES:
        raise ValueError(f"unknown support library piece {piece!r}; pieces: {', '.join(PIECES)}")
    module = llvm_target.new_module(f"ember_support_{piece}")
    if piece == SGEMM:
        llvm_matmul.define_sgemm(module, parallel=parallel)
        return module
    llvm_conv.define_conv2d(module, piece, parallel=parallel)
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
            llvm = llvm_target.llvm_binding()
            symbols = exported_symbols(piece)
            engine, _ = load_object(piece_object(piece, cache, parallel), llvm_target.new_host_target_machine(),
                                    symbols[0])
            for symbol in symbols:
                llvm.add_symbol(symbol, engine.get_function_address(symbol))
            _MCJIT_PIECES[piece] = engine
