"""sgemm for ember's CPU target: a tiled, packed, register-blocked float32 matmul.

`define_sgemm(module)` adds `ember_sgemm` to an llvmlite module; the kernel code generator
(cpu/program.py) calls it for matmul nodes and conv.py builds conv2d on it. The structure is
GotoBLAS/BLIS: the NC x KC block of B and the MC x KC block of A are packed into contiguous
panels, and an MR x NR microkernel keeps MR * NR / lanes vector accumulators in registers,
one FMA per (row, vector) and k. Row blocks (or column panels) run on libgomp's threads.
"""
import os
from dataclasses import dataclass

from llvmlite import ir

from ember.runtime.thread_runtime import load_libgomp  # libgomp, loaded without llvmlite
from ..llvm.loops import (F32, F32_PTR, I8_PTR, I32, I64, VOID, ceil_div, counted_loop, declare,
                          entry_alloca, f32, i32, i64, smin, splat)
from . import host
from .openmp import GOMP

SGEMM_NAME = "ember_sgemm"
SGEMM_THREADS_NAME = "ember_sgemm_threads"
# below this many flops (2*M*N*K) sgemm stays on the calling thread: a parallel region costs
# about as much as 10-20 us of single-core FMA work
PARALLEL_MIN_FLOPS = 4_000_000


@dataclass(frozen=True)
class SgemmGeometry:
    """Register and cache blocking: an MR x NR tile of C in registers (NR a multiple of the
    vector lanes), A blocks of MC x KC (L2), B blocks of KC x NC (L3)."""
    lanes: int
    mr: int
    nr: int
    mc: int
    kc: int
    nc: int

    def __post_init__(self):
        if self.nr % self.lanes or self.mc % self.mr or self.nc % self.nr:
            raise ValueError(f"sgemm geometry {self}: NR must be a multiple of the lanes, MC of MR, NC of NR")

    @property
    def name(self):
        return f"{self.mr}x{self.nr}"


def host_geometry():
    """The blocking for this CPU: 6x16 on AVX2 (12 of 16 ymm registers accumulate), 8x32 on
    AVX-512 (16 of 32 zmm registers: enough independent FMA chains, and small output-channel
    counts such as LeNet's 6 and 16 still fill most of a tile)."""
    lanes = host.host_vector_lanes(32)
    if lanes >= 16:
        return SgemmGeometry(lanes=16, mr=8, nr=32, mc=8 * 20, kc=384, nc=4096)
    if lanes == 8:
        return SgemmGeometry(lanes=8, mr=6, nr=16, mc=6 * 24, kc=256, nc=4096)
    return SgemmGeometry(lanes=4, mr=6, nr=8, mc=6 * 16, kc=256, nc=2048)


def default_num_threads():
    """EMBER_NUM_THREADS if set, else the number of CPUs this process may run on."""
    value = os.environ.get("EMBER_NUM_THREADS", "")
    if value:
        try:
            count = int(value)
        except ValueError:
            raise ValueError(f"EMBER_NUM_THREADS must be a positive integer, got {value!r}") from None
        if count < 1:
            raise ValueError(f"EMBER_NUM_THREADS must be a positive integer, got {value!r}")
        return count
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ----------------------------------------------------------------------------- microkernel

def define_microkernel(module, g, indirect=False, strided_a=False):
    """void kernel(i64 kc, f32* a, f32* b, f32* c, i64 ldc, i64 mr, i64 nr, f32 beta)

    C[r, j] = beta * C[r, j] + sum_k a[k*MR + r] * b[k*NR + j] for r < mr, j < nr over
    packed panels of A and B (beta == 0: C's old values are ignored); a full MR x NR tile is stored
    with vector stores, an edge tile with masked ones (rows past mr skipped).

    indirect=True adds a last argument `i32* offsets` and reads row k of B at
    b + offsets[k] instead (NR floats from there, any alignment): direct convolution reads
    its B rows straight out of a padded image this way (conv_direct.py).

    strided_a=True adds `i64 rsa, i64 csa` and reads A unpacked: a[r*rsa + k*csa] (rows past
    mr read row mr - 1, whose products are never stored). Small matmuls skip packing A this way.
    """
    assert not (indirect and strided_a)
    name = f"ember_sgemm_kernel_{g.name}" + ("_indirect" if indirect else "") + ("_strided_a" if strided_a else "")
    if name in module.globals:
        return module.globals[name]
    vector = ir.VectorType(F32, g.lanes)
    vectors_per_row = g.nr // g.lanes
    arguments = [I64, F32_PTR, F32_PTR, F32_PTR, I64, I64, I64, F32] + ([I32.as_pointer()] if indirect else []) \
        + ([I64, I64] if strided_a else [])
    fn = ir.Function(module, ir.FunctionType(VOID, arguments), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    kc, a, b, c, ldc, mr, nr, beta = fn.args[:8]
    offsets = fn.args[8] if indirect else None
    rsa, csa = fn.args[8:10] if strided_a else (None, None)
    for pointer in (a, c):
        pointer.add_attribute("noalias")
    fma = declare(module, f"llvm.fma.v{g.lanes}f32", vector, [vector] * 3)
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("k_loop")
    store = fn.append_basic_block("store")
    builder = ir.IRBuilder(entry)
    mask_type = ir.VectorType(ir.IntType(1), g.lanes)
    # the C tile is read and written after the k loop: start fetching it now
    prefetch = declare(module, "llvm.prefetch.p0", VOID, [I8_PTR, I32, I32, I32])
    for r in range(g.mr):
        row = builder.gep(c, [builder.mul(i64(r), ldc)])
        for line in range(0, g.nr, 16):
            address = builder.bitcast(builder.gep(row, [i64(line)]), I8_PTR)
            builder.call(prefetch, [address, i32(1), i32(3), i32(1)])
    zero = ir.Constant(vector, [0.0] * g.lanes)
    if strided_a:  # each row's start, rows past mr clamped to the last one
        last_row = builder.sub(mr, i64(1))
        a_rows = [builder.gep(a, [builder.mul(smin(builder, i64(r), last_row), rsa)]) for r in range(g.mr)]
    builder.branch(loop)

    builder.position_at_end(loop)
    k = builder.phi(I64, name="k")
    k.add_incoming(i64(0), entry)
    accumulators = [[builder.phi(vector, name=f"acc{r}_{v}") for v in range(vectors_per_row)]
                    for r in range(g.mr)]
    for row in accumulators:
        for phi in row:
            phi.add_incoming(zero, entry)
    if indirect:
        b_row = builder.gep(b, [builder.sext(builder.load(builder.gep(offsets, [k])), I64)])
    else:
        b_row = builder.gep(b, [builder.mul(k, i64(g.nr))])
    b_vectors = [builder.load(builder.bitcast(builder.gep(b_row, [i64(v * g.lanes)]), vector.as_pointer()),
                              align=4 if indirect else 4 * g.lanes) for v in range(vectors_per_row)]
    if strided_a:
        a_step = builder.mul(k, csa)
        a_pointers = [builder.gep(row, [a_step]) for row in a_rows]
    else:
        a_column = builder.gep(a, [builder.mul(k, i64(g.mr))])
        a_pointers = [builder.gep(a_column, [i64(r)]) for r in range(g.mr)]
    updated = []
    for r in range(g.mr):
        a_value = splat(builder, builder.load(a_pointers[r]), g.lanes)
        updated.append([builder.call(fma, [a_value, b_vectors[v], accumulators[r][v]])
                        for v in range(vectors_per_row)])
    following = builder.add(k, i64(1))
    k.add_incoming(following, loop)
    for row, new_row in zip(accumulators, updated):
        for phi, value in zip(row, new_row):
            phi.add_incoming(value, loop)
    builder.cbranch(builder.icmp_signed("<", following, kc), loop, store)

    builder.position_at_end(store)
    beta_is_zero = builder.fcmp_ordered("==", beta, f32(0.0))
    full = builder.and_(builder.icmp_signed("==", mr, i64(g.mr)), builder.icmp_signed("==", nr, i64(g.nr)))
    with builder.if_else(full) as (full_tile, edge_tile):
        with full_tile:
            beta_vector = splat(builder, beta, g.lanes)
            pointers = [[builder.bitcast(builder.gep(c, [builder.add(builder.mul(i64(r), ldc), i64(v * g.lanes))]),
                                         vector.as_pointer()) for v in range(vectors_per_row)]
                        for r in range(g.mr)]
            with builder.if_else(beta_is_zero) as (overwrite, update):
                with overwrite:
                    for r in range(g.mr):
                        for v in range(vectors_per_row):
                            builder.store(updated[r][v], pointers[r][v], align=4)
                with update:
                    for r in range(g.mr):
                        for v in range(vectors_per_row):
                            old = builder.load(pointers[r][v], align=4)
                            builder.store(builder.call(fma, [beta_vector, old, updated[r][v]]),
                                          pointers[r][v], align=4)
        with edge_tile:  # rows past mr are skipped, columns past nr masked off
            masked_load = declare(module, f"llvm.masked.load.v{g.lanes}f32.p0", vector,
                                  [vector.as_pointer(), I32, mask_type, vector])
            masked_store = declare(module, f"llvm.masked.store.v{g.lanes}f32.p0", VOID,
                                   [vector, vector.as_pointer(), I32, mask_type])
            beta_vector = splat(builder, beta, g.lanes)
            lanes = ir.Constant(ir.VectorType(I64, g.lanes), list(range(g.lanes)))
            columns = splat(builder, nr, g.lanes)
            masks = [builder.icmp_signed("<", builder.add(lanes, splat(builder, i64(v * g.lanes), g.lanes)), columns)
                     for v in range(vectors_per_row)]
            for r in range(g.mr):
                with builder.if_then(builder.icmp_signed("<", i64(r), mr)):
                    for v in range(vectors_per_row):
                        pointer = builder.bitcast(builder.gep(c, [builder.add(builder.mul(i64(r), ldc),
                                                                              i64(v * g.lanes))]), vector.as_pointer())
                        old = builder.call(masked_load, [pointer, i32(4), masks[v], zero])
                        scaled = builder.call(fma, [beta_vector, old, updated[r][v]])
                        value = builder.select(beta_is_zero, updated[r][v], scaled)
                        builder.call(masked_store, [value, pointer, i32(4), masks[v]])
    builder.ret_void()
    return fn


# ----------------------------------------------------------------------------- packing

def _define_pack_a(module, g):
    """void pack_a(i64 mc, i64 kc, f32* a, i64 rsa, i64 csa, f32* ap): MR-row panels,
    ap[(p*kc + k)*MR + r] = a[(p*MR + r)*rsa + k*csa], rows past mc zero."""
    return _define_packer(module, f"ember_sgemm_pack_a_{g.mr}", g.mr, None, b_side=False)


def _pack_panels(builder, extent, kc, source, extent_stride, k_stride, packed, width, lanes=None):
    """packed[(p*kc + k)*width + e] = source[(p*width + e)*extent_stride + k*k_stride] for
    e < width, zero past `extent`: the loop order reads the source along its unit stride.
    With `lanes` (width a multiple of it), full panels of a unit-stride extent copy vectors."""
    with counted_loop(builder, 0, ceil_div(builder, extent, i64(width)), name="p") as p:
        first = builder.mul(p, i64(width))
        count = smin(builder, i64(width), builder.sub(extent, first))
        panel = builder.gep(packed, [builder.mul(first, kc)])
        origin = builder.gep(source, [builder.mul(first, extent_stride)])
        with builder.if_then(builder.icmp_signed("<", count, i64(width))):  # edge panel: zeros first
            with counted_loop(builder, 0, builder.mul(kc, i64(width)), name="z") as z:
                builder.store(f32(0.0), builder.gep(panel, [z]))
        with builder.if_else(builder.icmp_signed("==", extent_stride, i64(1))) as (along_extent, along_k):
            with along_extent:
                if lanes:
                    full = builder.icmp_signed("==", count, i64(width))
                    vector = ir.VectorType(F32, lanes).as_pointer()
                    with builder.if_then(full):
                        with counted_loop(builder, 0, kc, name="kv") as k:
                            row = builder.gep(origin, [builder.mul(k, k_stride)])
                            out = builder.gep(panel, [builder.mul(k, i64(width))])
                            for v in range(0, width, lanes):
                                value = builder.load(builder.bitcast(builder.gep(row, [i64(v)]), vector), align=4)
                                builder.store(value, builder.bitcast(builder.gep(out, [i64(v)]), vector), align=4)
                    remaining = builder.select(full, i64(0), kc)  # edge panels: the scalar loop below
                else:
                    remaining = kc
                with counted_loop(builder, 0, remaining, name="k") as k:
                    row = builder.gep(origin, [builder.mul(k, k_stride)])
                    out = builder.gep(panel, [builder.mul(k, i64(width))])
                    with counted_loop(builder, 0, count, name="e") as e:
                        builder.store(builder.load(builder.gep(row, [e])), builder.gep(out, [e]))
            with along_k:
                done = i64(0)
                if lanes:  # full panels of a source running along k: transposed in registers
                    done = _pack_transposed(builder, count, kc, origin, extent_stride, k_stride, panel, width, lanes)
                with counted_loop(builder, 0, count, name="e") as e:
                    line = builder.gep(origin, [builder.mul(e, extent_stride)])
                    out = builder.gep(panel, [e])
                    with counted_loop(builder, done, kc, name="k") as k:
                        value = builder.load(builder.gep(line, [builder.mul(k, k_stride)]))
                        builder.store(value, builder.gep(out, [builder.mul(k, i64(width))]))


def _transpose(builder, vectors):
    """The transpose of a square block held as len(vectors) vectors of as many lanes (a power
    of two): log2(n) rounds of interleaving vector i with vector i + n/2."""
    n = len(vectors)
    low = ir.Constant(ir.VectorType(I32, n), [j // 2 + (j % 2) * n for j in range(n)])
    high = ir.Constant(ir.VectorType(I32, n), [n // 2 + j // 2 + (j % 2) * n for j in range(n)])
    for _ in range(n.bit_length() - 1):
        pairs = [(vectors[i], vectors[i + n // 2]) for i in range(n // 2)]
        vectors = [builder.shuffle_vector(x, y, mask) for x, y in pairs for mask in (low, high)]
    return vectors


def _pack_transposed(builder, count, kc, origin, extent_stride, k_stride, panel, width, lanes):
    """The vector part of packing a full panel whose source runs along k (k_stride 1, a
    transposed B such as a Linear layer's weight): lanes x lanes blocks loaded as rows of the
    source and stored transposed. Returns how many k it packed (0 for other panels)."""
    vector = ir.VectorType(F32, lanes)
    fits = builder.and_(builder.icmp_signed("==", count, i64(width)), builder.icmp_signed("==", k_stride, i64(1)))
    whole = builder.select(fits, builder.mul(builder.sdiv(kc, i64(lanes)), i64(lanes)), i64(0))
    with counted_loop(builder, 0, whole, step=lanes, name="kt") as k:
        for part in range(0, width, lanes):
            rows = [builder.load(builder.bitcast(builder.gep(origin, [builder.add(
                builder.mul(i64(part + e), extent_stride), k)]), vector.as_pointer()), align=4) for e in range(lanes)]
            for step, column in enumerate(_transpose(builder, rows)):
                out = builder.gep(panel, [builder.add(builder.mul(builder.add(k, i64(step)), i64(width)), i64(part))])
                builder.store(column, builder.bitcast(out, vector.as_pointer()), align=4)
    return whole


def _define_pack_b(module, g):
    """void pack_b(i64 kc, i64 nc, f32* b, i64 rsb, i64 csb, f32* bp): NR-column panels,
    bp[(q*kc + k)*NR + j] = b[k*rsb + (q*NR + j)*csb], columns past nc zero."""
    return _define_packer(module, f"ember_sgemm_pack_b_{g.nr}", g.nr, g.lanes, b_side=True)


def _define_packer(module, name, width, lanes, b_side):
    """One packing function (once per module): A's (extent, kc, source, extent stride, k
    stride) argument order, or B's (kc, extent, source, k stride, extent stride)."""
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(VOID, [I64, I64, F32_PTR, I64, I64, F32_PTR]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("optsize")  # cold copy loops: no vectoriser versions (halves compile time)
    first, second, source, first_stride, second_stride, packed = fn.args
    source.add_attribute("noalias")
    packed.add_attribute("noalias")
    if b_side:
        kc, extent, k_stride, extent_stride = first, second, first_stride, second_stride
    else:
        extent, kc, extent_stride, k_stride = first, second, first_stride, second_stride
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    _pack_panels(builder, extent, kc, source, extent_stride, k_stride, packed, width, lanes)
    builder.ret_void()
    return fn


# ----------------------------------------------------------------------------- blocked driver

# what every thread of one sgemm call gets
_TASK_FIELDS = ("m", "n", "k", "a", "rsa", "csa", "b", "rsb", "csb", "c", "ldc", "beta")
_TASK_TYPES = (I64, I64, I64, F32_PTR, I64, I64, F32_PTR, I64, I64, F32_PTR, I64, F32)
TASK = ir.LiteralStructType(_TASK_TYPES)
_STACK_PACKED_B_FLOATS = 16384  # 64 KiB: small problems pack B on the stack, larger ones malloc
DIRECT_A_FLOATS = 512 * 512  # an A of at most this many elements (1 MiB) is read unpacked


def _task_field(builder, task, name):
    index = _TASK_FIELDS.index(name)
    return builder.load(builder.gep(task, [i32(0), i32(index)], inbounds=True), name=name)


def _define_slice(module, g):
    """void slice(task*, i32 t, i32 T): thread t of T computes its own part of C, start to end:
    a range of B's NR-column panels (threads split N when N >= M or M has too few row tiles)
    or an equal share of C's rows (in MR-row tiles), packing the B blocks it needs itself. No
    thread waits for another inside the call (one parallel region per sgemm, no barriers: on a
    virtual machine every wake-up of a sleeping thread costs tens of microseconds); the price
    is that threads splitting M each pack the same B blocks.

    A is packed in MC x KC blocks only when it is large (more than DIRECT_A_FLOATS): a smaller
    A stays in the caches as it is, and the microkernel reads it through its strides (packing
    it cost up to a third of a 512 x 512 x 128 product)."""
    name = f"ember_sgemm_slice_{g.name}"
    if name in module.globals:
        return module.globals[name]
    kernel, pack_a, pack_b = define_microkernel(module, g), _define_pack_a(module, g), _define_pack_b(module, g)
    direct_kernel = define_microkernel(module, g, strided_a=True)
    fn = ir.Function(module, ir.FunctionType(VOID, [TASK.as_pointer(), I32, I32]), name=name)
    fn.linkage = "internal"
    task, thread, threads = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    packed_a = entry_alloca(builder, F32, g.mc * g.kc, name="packed_a")
    stack_packed_b = entry_alloca(builder, F32, _STACK_PACKED_B_FLOATS, name="stack_packed_b")
    m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, beta = (_task_field(builder, task, field) for field in _TASK_FIELDS)
    t, count = builder.sext(thread, I64), builder.sext(threads, I64)

    def share(total, part, parts):
        return builder.sdiv(builder.mul(total, part), parts)

    row_tiles = ceil_div(builder, m, i64(g.mr))
    panels = ceil_div(builder, n, i64(g.nr))
    split_n = builder.or_(builder.icmp_signed(">=", n, m), builder.icmp_signed("<", row_tiles, count))
    threads_n = builder.select(split_n, smin(builder, count, panels), i64(1))
    threads_m = smin(builder, builder.sdiv(count, threads_n), row_tiles)
    threads_n = smin(builder, builder.sdiv(count, threads_m), panels)
    with builder.if_then(builder.icmp_signed(">=", t, builder.mul(threads_m, threads_n))):
        builder.ret_void()
    t_m, t_n = builder.srem(t, threads_m), builder.sdiv(t, threads_m)
    first_row = builder.mul(share(row_tiles, t_m, threads_m), i64(g.mr))
    end_row = smin(builder, builder.mul(share(row_tiles, builder.add(t_m, i64(1)), threads_m), i64(g.mr)), m)
    first_column = builder.mul(share(panels, t_n, threads_n), i64(g.nr))
    end_column = smin(builder, builder.mul(share(panels, builder.add(t_n, i64(1)), threads_n), i64(g.nr)), n)
    direct_a = builder.icmp_signed("<=", builder.mul(m, k), i64(DIRECT_A_FLOATS))

    # this thread's packed B block: on the stack when it fits
    widest = smin(builder, i64(g.nc), builder.mul(ceil_div(builder, builder.sub(end_column, first_column),
                                                                i64(g.nr)), i64(g.nr)))
    floats = builder.mul(smin(builder, i64(g.kc), k), widest)
    on_heap = builder.icmp_signed(">", floats, i64(_STACK_PACKED_B_FLOATS))
    aligned_alloc = declare(module, "aligned_alloc", I8_PTR, [I64, I64])
    free = declare(module, "free", VOID, [I8_PTR])
    before = builder.block
    with builder.if_then(on_heap):
        size = builder.mul(builder.sdiv(builder.add(floats, i64(15)), i64(16)), i64(64))
        heap = builder.bitcast(builder.call(aligned_alloc, [i64(64), size]), F32_PTR)
        allocated = builder.block
    packed_b = builder.phi(F32_PTR, name="packed_b")
    packed_b.add_incoming(stack_packed_b, before)
    packed_b.add_incoming(heap, allocated)

    with counted_loop(builder, first_column, end_column, step=g.nc, name="jc") as jc:
        nc = smin(builder, i64(g.nc), builder.sub(end_column, jc))
        with counted_loop(builder, 0, k, step=g.kc, name="pc") as pc:
            kc = smin(builder, i64(g.kc), builder.sub(k, pc))
            beta_block = builder.select(builder.icmp_signed("==", pc, i64(0)), beta, f32(1.0))
            source = builder.gep(b, [builder.add(builder.mul(pc, rsb), builder.mul(jc, csb))])
            builder.call(pack_b, [kc, nc, source, rsb, csb, packed_b])
            with counted_loop(builder, first_row, end_row, step=g.mc, name="block") as ic:
                mc = smin(builder, i64(g.mc), builder.sub(end_row, ic))
                a_block = builder.gep(a, [builder.add(builder.mul(ic, rsa), builder.mul(pc, csa))])
                with builder.if_then(builder.not_(direct_a)):
                    builder.call(pack_a, [mc, kc, a_block, rsa, csa, packed_a])
                with counted_loop(builder, 0, nc, step=g.nr, name="panel") as column:
                    nr = smin(builder, i64(g.nr), builder.sub(nc, column))
                    b_panel = builder.gep(packed_b, [builder.mul(column, kc)])
                    c_panel = builder.gep(c, [builder.add(builder.mul(ic, ldc), builder.add(jc, column))])
                    with counted_loop(builder, 0, mc, step=g.mr, name="ir") as ir_:
                        mr = smin(builder, i64(g.mr), builder.sub(mc, ir_))
                        c_tile = builder.gep(c_panel, [builder.mul(ir_, ldc)])
                        with builder.if_else(direct_a) as (unpacked, packed):
                            with unpacked:
                                builder.call(direct_kernel, [kc, builder.gep(a_block, [builder.mul(ir_, rsa)]),
                                                             b_panel, c_tile, ldc, mr, nr, beta_block, rsa, csa])
                            with packed:
                                builder.call(kernel, [kc, builder.gep(packed_a, [builder.mul(ir_, kc)]), b_panel,
                                                      c_tile, ldc, mr, nr, beta_block])
    with builder.if_then(on_heap):
        builder.call(free, [builder.bitcast(packed_b, I8_PTR)])
    builder.ret_void()
    return fn


def _define_worker(module, g, gomp, slice_fn):
    """The GOMP_parallel task: slice(task, omp_get_thread_num(), omp_get_num_threads())."""
    name = f"ember_sgemm_worker_{g.name}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(VOID, [I8_PTR]), name=name)
    fn.linkage = "internal"
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.call(slice_fn, [builder.bitcast(fn.args[0], TASK.as_pointer()),
                            builder.call(gomp.thread_num, []), builder.call(gomp.num_threads, [])])
    builder.ret_void()
    return fn


def _scale_rows(builder, m, n, c, ldc, beta):
    """C[:m, :n] *= beta (beta == 0 writes zeros, never reads C)."""
    beta_is_zero = builder.fcmp_ordered("==", beta, f32(0.0))
    with counted_loop(builder, 0, m, name="sr") as r:
        row = builder.gep(c, [builder.mul(r, ldc)])
        with counted_loop(builder, 0, n, name="sj") as j:
            pointer = builder.gep(row, [j])
            scaled = builder.fmul(beta, builder.load(pointer))
            builder.store(builder.select(beta_is_zero, f32(0.0), scaled), pointer)


def define_sgemm(module, geometry=None, parallel=None):
    """Add (once) and return `ember_sgemm` to an llvmlite module:

        void ember_sgemm(i64 M, i64 N, i64 K, const f32* A, i64 rsa, i64 csa,
                         const f32* B, i64 rsb, i64 csb, f32* C, i64 ldc, f32 beta)

    C[i*ldc + j] = beta * C[i*ldc + j] + sum_k A[i*rsa + k*csa] * B[k*rsb + j*csb] for i < M,
    j < N; beta == 0 never reads C (it may hold garbage). Any strides: transposed operands
    cost nothing. `ember_sgemm_threads` has one more argument, i32 num_threads (0: libgomp's
    default, i.e. OMP_NUM_THREADS or all CPUs); ember_sgemm passes 0. Problems under
    PARALLEL_MIN_FLOPS run on the calling thread.

    parallel=None uses libgomp when `load_libgomp()` finds it; the JIT must have it loaded
    (load_libgomp does that) and a shared library must link it (-lgomp).
    """
    if SGEMM_NAME in module.globals:
        return module.globals[SGEMM_NAME]
    g = geometry or host_geometry()
    if parallel is None:
        parallel = load_libgomp() is not None
    gomp = GOMP(module) if parallel else None
    slice_fn = _define_slice(module, g)
    worker = _define_worker(module, g, gomp, slice_fn) if parallel else None

    arguments = [I64, I64, I64, F32_PTR, I64, I64, F32_PTR, I64, I64, F32_PTR, I64, F32]
    threaded = ir.Function(module, ir.FunctionType(VOID, arguments + [I32]), name=SGEMM_THREADS_NAME)
    m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, beta, requested = threaded.args
    builder = ir.IRBuilder(threaded.append_basic_block("entry"))
    task = entry_alloca(builder, TASK, 1, name="task")
    with builder.if_then(builder.or_(builder.icmp_signed("<=", m, i64(0)), builder.icmp_signed("<=", n, i64(0)))):
        builder.ret_void()
    with builder.if_then(builder.icmp_signed("<=", k, i64(0))):
        _scale_rows(builder, m, n, c, ldc, beta)
        builder.ret_void()
    for name, value in zip(_TASK_FIELDS, (m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, beta)):
        builder.store(value, builder.gep(task, [i32(0), i32(_TASK_FIELDS.index(name))], inbounds=True))
    if parallel:
        default = builder.call(gomp.max_threads, [])
        threads = builder.select(builder.icmp_signed(">", requested, i32(0)), requested, default)
        flops = builder.mul(builder.mul(builder.mul(m, n), k), i64(2))
        threads = builder.select(builder.icmp_signed("<", flops, i64(PARALLEL_MIN_FLOPS)), i32(1), threads)
        with builder.if_else(builder.icmp_signed(">", threads, i32(1))) as (many, one):
            with many:
                builder.call(gomp.parallel, [worker, builder.bitcast(task, I8_PTR), threads, i32(0)])
            with one:
                builder.call(slice_fn, [task, i32(0), i32(1)])
    else:
        builder.call(slice_fn, [task, i32(0), i32(1)])
    builder.ret_void()

    plain = ir.Function(module, ir.FunctionType(VOID, arguments), name=SGEMM_NAME)
    builder = ir.IRBuilder(plain.append_basic_block("entry"))
    builder.call(threaded, list(plain.args) + [i32(0)])
    builder.ret_void()
    return plain
