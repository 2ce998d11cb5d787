"""Direct convolution for one image group: no im2col matrix, B rows read from a padded image.

conv.py uses it for conv2d with unit column stride and for conv2d_grad_input with unit
strides (a convolution of the padded output gradient with the flipped, transposed weights).
The image is copied once into a zero-padded buffer; output row y, columns x..x+NR of output
channel block m..m+MR is an MR x NR tile of sgemm.py's microkernel whose B row for tap
k = (channel, ky, kx) starts at padded + offsets[k] + y*stride_h*Wp + x: the "indirect" variant
of the microkernel loads it there. Weights are packed into MR-row panels once per call.
"""
from llvmlite import ir

from ..llvm.loops import F32, F32_PTR, I32, I64, VOID, ceil_div, counted_loop, declare, f32, i64, smax, smin
from .sgemm import define_microkernel, host_geometry

NAME = "ember_conv_direct"
DIRECT_KC = 1024  # K block of the direct kernel: its B rows come from the image, not a packed block
I32_PTR = I32.as_pointer()


def padded_extent(out_rows, out_columns, kh, kw, sh, dh, dw):
    """(Hp, Wp): rows and columns of the padded input the output needs (unit column stride)."""
    return (out_rows - 1) * sh + (kh - 1) * dh + 1, out_columns + (kw - 1) * dw


def workspace_floats(in_channels, out_channels, out_rows, out_columns, kh, kw, sh, dh, dw, geometry=None):
    """Floats of scratch one call needs: the padded image (+ NR of over-read slack), the two
    i32 offset tables and the packed weight panels."""
    g = geometry or host_geometry()
    hp, wp = padded_extent(out_rows, out_columns, kh, kw, sh, dh, dw)
    taps = in_channels * kh * kw
    panels = -(-out_channels // g.mr)
    return in_channels * hp * wp + g.nr + 2 * taps + panels * g.mr * taps


def _define_prepare(module, g):
    """Internal `void ember_conv_direct_prepare(f32* weights, i64 m, i64 flip, i64 cin, i64 kh,
    i64 kw, i64 dh, i64 dw, i64 wp, i64 plane, i32* b_offsets, i32* a_offsets, f32* packed)`:
    the tap offset tables and the weights packed into MR-row panels (compiled for size: it
    runs once per thread and group)."""
    name = f"ember_conv_direct_prepare_{g.mr}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(VOID, [F32_PTR] + [I64] * 9 + [I32_PTR, I32_PTR, F32_PTR]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("optsize")
    weights, m, flip, cin, kh, kw, dh, dw, wp, plane, b_offsets, a_offsets, packed = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    taps = b.mul(kh, kw)
    depth = b.mul(cin, taps)
    # B row of tap k in the padded image, A column of tap k in the weights
    flipped = b.icmp_signed("!=", flip, i64(0))
    with counted_loop(b, 0, cin, name="oc") as channel:
        with counted_loop(b, 0, kh, name="oy") as ky:
            with counted_loop(b, 0, kw, name="ox") as kx:
                k = b.add(b.mul(b.add(b.mul(channel, kh), ky), kw), kx)
                b_offset = b.add(b.add(b.mul(channel, plane), b.mul(b.mul(ky, dh), wp)), b.mul(kx, dw))
                b.store(b.trunc(b_offset, I32), b.gep(b_offsets, [k]))
                rotated = b.add(b.mul(b.sub(b.sub(kh, i64(1)), ky), kw), b.sub(b.sub(kw, i64(1)), kx))
                transposed = b.add(b.mul(b.mul(channel, m), taps), rotated)
                b.store(b.trunc(b.select(flipped, transposed, k), I32), b.gep(a_offsets, [k]))
    # weights packed into MR-row panels: packed[(p*depth + k)*MR + r] = A[p*MR + r, k]
    row_stride = b.select(flipped, taps, depth)
    with counted_loop(b, 0, ceil_div(b, m, i64(g.mr)), name="ap") as panel:
        first = b.mul(panel, i64(g.mr))
        out = b.gep(packed, [b.mul(first, depth)])
        rows = [b.add(first, i64(r)) for r in range(g.mr)]
        valid = [b.icmp_signed("<", row, m) for row in rows]
        bases = [b.gep(weights, [b.mul(smin(b, row, b.sub(m, i64(1))), row_stride)]) for row in rows]
        with counted_loop(b, 0, depth, name="ak") as k:
            column = b.sext(b.load(b.gep(a_offsets, [k])), I64)
            slot = b.gep(out, [b.mul(k, i64(g.mr))])
            for r in range(g.mr):
                value = b.select(valid[r], b.load(b.gep(bases[r], [column])), f32(0.0))
                b.store(value, b.gep(slot, [i64(r)]))
    b.ret_void()
    return fn


def emit_workspace_floats(b, in_channels, out_channels, out_rows, out_columns, kh, kw, sh, dh, dw, geometry=None):
    """workspace_floats computed in IR (the same formula)."""
    g = geometry or host_geometry()
    hp = b.add(b.add(b.mul(b.sub(out_rows, i64(1)), sh), b.mul(b.sub(kh, i64(1)), dh)), i64(1))
    wp = b.add(out_columns, b.mul(b.sub(kw, i64(1)), dw))
    taps = b.mul(in_channels, b.mul(kh, kw))
    panels = ceil_div(b, out_channels, i64(g.mr))
    return b.add(b.add(b.mul(in_channels, b.mul(hp, wp)), i64(g.nr)),
                 b.add(b.mul(taps, i64(2)), b.mul(b.mul(panels, i64(g.mr)), taps)))


def define_direct_conv(module, geometry=None):
    """Add (once) the internal function

        void ember_conv_direct(f32* src, i64 cin, i64 hs, i64 ws, i64 pad_top, i64 pad_left,
                               f32* weights, i64 m, i64 flip,
                               f32* dst, i64 oh, i64 ow, i64 kh, i64 kw, i64 dh, i64 dw, i64 sh,
                               f32* scratch, i64 prepare)

    dst[r, y, x] = sum over c < cin, ky, kx of A[r, (c, ky, kx)] *
                   src[c, y*sh + ky*dh - pad_top, x + kx*dw - pad_left]  (0 outside src)
    for r < m, with A[r, (c,ky,kx)] = weights[r, c, ky, kx] (flip = 0: a conv2d weight
    [m, cin, kh, kw]) or weights[c, r, kh-1-ky, kw-1-kx] (flip = 1: a weight [cin, m, kh, kw]
    used transposed and rotated, as conv2d_grad_input needs). Pads may be negative (crops).
    scratch holds workspace_floats(cin, m, oh, ow, kh, kw, sh, dh, dw) floats. prepare = 0
    reuses the offset tables and packed weights a previous call with the same weights and
    shapes left in scratch (prepare = 1 builds them).
    """
    if NAME in module.globals:
        return module.globals[NAME]
    g = geometry or host_geometry()
    kernel = define_microkernel(module, g, indirect=True)
    arguments = [F32_PTR, I64, I64, I64, I64, I64, F32_PTR, I64, I64, F32_PTR] + [I64] * 7 + [F32_PTR, I64]
    fn = ir.Function(module, ir.FunctionType(VOID, arguments), name=NAME)
    fn.linkage = "internal"
    src, cin, hs, ws, pad_top, pad_left, weights, m, flip, dst, oh, ow, kh, kw, dh, dw, sh, scratch, prepare = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    hp = b.add(b.add(b.mul(b.sub(oh, i64(1)), sh), b.mul(b.sub(kh, i64(1)), dh)), i64(1))
    wp = b.add(ow, b.mul(b.sub(kw, i64(1)), dw))
    taps = b.mul(kh, kw)
    depth = b.mul(cin, taps)  # K of the product
    plane = b.mul(hp, wp)
    padded = scratch
    b_offsets = b.bitcast(b.gep(padded, [b.add(b.mul(cin, plane), i64(g.nr))]), I32_PTR)
    a_offsets = b.gep(b_offsets, [depth])
    packed = b.bitcast(b.gep(a_offsets, [depth]), F32_PTR)

    # 1. zero-padded copy of the image (plus NR floats of slack read by edge tiles)
    _emit_padded_copy(b, src, cin, hs, ws, pad_top, pad_left, padded, hp, wp, i64(g.nr))

    # 2.-3. offset tables and packed weights depend on the weights and shapes only: a caller
    # running many images of one group through the same scratch prepares them once
    with b.if_then(b.icmp_signed("!=", prepare, i64(0))):
        b.call(_define_prepare(module, g), [weights, m, flip, cin, kh, kw, dh, dw, wp, plane, b_offsets, a_offsets,
                                            packed])

    # 4. tiles: K blocks outermost (packed A block stays in cache), then rows, columns, channels
    plane_out = b.mul(oh, ow)
    with counted_loop(b, 0, depth, step=DIRECT_KC, name="kb") as k0:
        kc = smin(b, i64(DIRECT_KC), b.sub(depth, k0))
        beta = b.select(b.icmp_signed("==", k0, i64(0)), f32(0.0), f32(1.0))
        offsets = b.gep(b_offsets, [k0])
        with counted_loop(b, 0, oh, name="ty") as y:
            row_base = b.gep(padded, [b.mul(b.mul(y, sh), wp)])
            with counted_loop(b, 0, ow, step=g.nr, name="tx") as x:
                nr = smin(b, i64(g.nr), b.sub(ow, x))
                b_base = b.gep(row_base, [x])
                c_base = b.gep(dst, [b.add(b.mul(y, ow), x)])
                with counted_loop(b, 0, m, step=g.mr, name="tm") as r0:
                    mr = smin(b, i64(g.mr), b.sub(m, r0))
                    a_panel = b.gep(packed, [b.add(b.mul(r0, depth), b.mul(k0, i64(g.mr)))])
                    b.call(kernel, [kc, a_panel, b_base, b.gep(c_base, [b.mul(r0, plane_out)]), plane_out,
                                    mr, nr, beta, offsets])
    b.ret_void()
    return fn


# ----------------------------------------------------------------------------- weight gradient

GRAD_WEIGHT_NAME = "ember_conv_direct_grad_weight"


def grad_weight_tile(lanes):
    """(output channels, taps) per register tile: 2x5 accumulators of 8 lanes on AVX2 (10 of 16
    registers, with 2 + 1 for the operands), 4x6 of 16 lanes on AVX-512 (24 of 32)."""
    return (4, 6) if lanes >= 16 else (2, 5)


def _grad_weight_layout(in_channels, out_channels, out_rows, out_columns, kh, kw, dh, dw, lanes):
    """(Hp, Wp, dy floats): the padded image and the output gradient laid out on its row pitch."""
    hp, wp = padded_extent(out_rows, out_columns, kh, kw, 1, dh, dw)
    flat = -(-(out_rows * wp) // lanes) * lanes
    return hp, wp, out_channels * flat


def grad_weight_workspace_floats(in_channels, out_channels, out_rows, out_columns, kh, kw, dh, dw, geometry=None):
    """Floats of scratch ember_conv_direct_grad_weight needs: the padded image (+ a row and a
    vector of slack), the tap offset table, and the output gradient on the image's row pitch."""
    g = geometry or host_geometry()
    hp, wp, dy_floats = _grad_weight_layout(in_channels, out_channels, out_rows, out_columns, kh, kw, dh, dw,
                                            g.lanes)
    return in_channels * hp * wp + wp + g.lanes + in_channels * kh * kw + dy_floats


def emit_grad_weight_workspace_floats(b, in_channels, out_channels, out_rows, out_columns, kh, kw, dh, dw,
                                      geometry=None):
    """grad_weight_workspace_floats computed in IR (the same formula)."""
    g = geometry or host_geometry()
    hp = b.add(b.add(out_rows, b.mul(b.sub(kh, i64(1)), dh)), i64(0))
    wp = b.add(out_columns, b.mul(b.sub(kw, i64(1)), dw))
    flat = b.mul(ceil_div(b, b.mul(out_rows, wp), i64(g.lanes)), i64(g.lanes))
    return b.add(b.add(b.mul(in_channels, b.mul(hp, wp)), b.add(wp, i64(g.lanes))),
                 b.add(b.mul(in_channels, b.mul(kh, kw)), b.mul(out_channels, flat)))


PAD_COPY_NAME = "ember_conv_pad_copy"


def _emit_padded_copy(b, src, channels, rows, columns, pad_top, pad_left, dst, dst_rows, dst_columns, slack):
    """Calls (defining it once) void ember_conv_pad_copy(src, channels, rows, columns,
    pad_top, pad_left, dst, dst_rows, dst_columns, slack): see _emit_padded_copy_body."""
    module = b.module
    fn = module.globals.get(PAD_COPY_NAME)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(VOID, [F32_PTR, I64, I64, I64, I64, I64, F32_PTR, I64, I64, I64]),
                         name=PAD_COPY_NAME)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        for pointer in (fn.args[0], fn.args[6]):
            pointer.add_attribute("noalias")
        body = ir.IRBuilder(fn.append_basic_block("entry"))
        _emit_padded_copy_body(body, *fn.args)
        body.ret_void()
    b.call(fn, [src, channels, rows, columns, pad_top, pad_left, dst, dst_rows, dst_columns, slack])


def _emit_padded_copy_body(b, src, channels, rows, columns, pad_top, pad_left, dst, dst_rows, dst_columns, slack):
    """dst[c, i, j] = src[c, i - pad_top, j - pad_left] (0 outside src) for i < dst_rows,
    j < dst_columns, then `slack` zeros after the last row."""
    lo = smin(b, smax(b, pad_left, i64(0)), dst_columns)
    hi = smin(b, smax(b, b.add(columns, pad_left), lo), dst_columns)
    with counted_loop(b, 0, b.mul(channels, dst_rows), name="prow") as row:
        channel, i = b.sdiv(row, dst_rows), b.srem(row, dst_rows)
        out = b.gep(dst, [b.mul(row, dst_columns)])
        source_row = b.sub(i, pad_top)
        inside = b.and_(b.icmp_signed(">=", source_row, i64(0)), b.icmp_signed("<", source_row, rows))
        start, stop = b.select(inside, lo, dst_columns), b.select(inside, hi, dst_columns)
        with counted_loop(b, 0, start, name="pz0") as j:
            b.store(f32(0.0), b.gep(out, [j]))
        source = b.gep(src, [b.sub(b.mul(b.add(b.mul(channel, rows), smax(b, source_row, i64(0))), columns),
                                   pad_left)])
        with counted_loop(b, start, stop, name="pcopy") as j:
            b.store(b.load(b.gep(source, [j])), b.gep(out, [j]))
        with counted_loop(b, stop, dst_columns, name="pz1") as j:
            b.store(f32(0.0), b.gep(out, [j]))
    end = b.gep(dst, [b.mul(b.mul(channels, dst_rows), dst_columns)])
    with counted_loop(b, 0, slack, name="slack") as j:
        b.store(f32(0.0), b.gep(end, [j]))


def define_direct_grad_weight(module, geometry=None):
    """Add (once) the internal function

        void ember_conv_direct_grad_weight(f32* x, f32* dy, f32* dw, i64 cin, i64 m, i64 h, i64 w,
                                           i64 oh, i64 ow, i64 kh, i64 kw, i64 dh, i64 dwid,
                                           i64 ph, i64 pw, f32 beta, f32* scratch)

    dw[r, (c,ky,kx)] = beta * dw[...] + sum over y < oh, x < ow of
                       dy[r, y, x] * x[c, y + ky*dh - ph, x + kx*dwid - pw]
    for one image group with unit strides. No packing: x is copied into a zero-padded image
    of row pitch Wp and dy onto the same pitch (zeros past ow), so for every tap the sum runs
    over one flat, unit-stride range q = y*Wp + x of both, in vectors; a tile of output
    channels x taps accumulates in registers and each accumulator is summed across its lanes
    once. (Columns past ow multiply real image values by dy's zeros: an inf or nan in x there
    turns into nan, where the exact sum might skip it; such an input makes the loss nan anyway.)
    scratch holds grad_weight_workspace_floats(cin, m, oh, ow, kh, kw, dh, dwid) floats.
    """
    if GRAD_WEIGHT_NAME in module.globals:
        return module.globals[GRAD_WEIGHT_NAME]
    g = geometry or host_geometry()
    lanes = g.lanes
    tile_m, tile_k = grad_weight_tile(lanes)
    vector = ir.VectorType(F32, lanes)
    fma = declare(module, f"llvm.fma.v{lanes}f32", vector, [vector] * 3)
    reduce_add = declare(module, f"llvm.vector.reduce.fadd.v{lanes}f32", F32, [F32, vector])
    arguments = [F32_PTR, F32_PTR, F32_PTR] + [I64] * 12 + [F32, F32_PTR]
    fn = ir.Function(module, ir.FunctionType(VOID, arguments), name=GRAD_WEIGHT_NAME)
    fn.linkage = "internal"
    x, dy, dwt, cin, m, h, w, oh, ow, kh, kw, dh, dwid, ph, pw, beta, scratch = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    hp = b.add(oh, b.mul(b.sub(kh, i64(1)), dh))
    wp = b.add(ow, b.mul(b.sub(kw, i64(1)), dwid))
    taps = b.mul(cin, b.mul(kh, kw))
    chunks = ceil_div(b, b.mul(oh, wp), i64(lanes))
    flat = b.mul(chunks, i64(lanes))
    padded = scratch
    offsets = b.bitcast(b.gep(padded, [b.add(b.mul(cin, b.mul(hp, wp)), b.add(wp, i64(lanes)))]), I32_PTR)
    flat_dy = b.bitcast(b.gep(offsets, [taps]), F32_PTR)

    _emit_padded_copy(b, x, cin, h, w, ph, pw, padded, hp, wp, b.add(wp, i64(lanes)))
    with counted_loop(b, 0, m, name="dyc") as channel:  # dy on the image's row pitch, zeros past ow
        out = b.gep(flat_dy, [b.mul(channel, flat)])
        with counted_loop(b, 0, flat, name="dyz") as q:
            b.store(f32(0.0), b.gep(out, [q]))
        source = b.gep(dy, [b.mul(channel, b.mul(oh, ow))])
        with counted_loop(b, 0, oh, name="dyy") as y:
            row_out = b.gep(out, [b.mul(y, wp)])
            row_in = b.gep(source, [b.mul(y, ow)])
            with counted_loop(b, 0, ow, name="dyx") as column:
                b.store(b.load(b.gep(row_in, [column])), b.gep(row_out, [column]))
    with counted_loop(b, 0, cin, name="oc") as channel:
        with counted_loop(b, 0, kh, name="oy") as ky:
            with counted_loop(b, 0, kw, name="ox") as kx:
                k = b.add(b.mul(b.add(b.mul(channel, kh), ky), kw), kx)
                offset = b.add(b.add(b.mul(channel, b.mul(hp, wp)), b.mul(b.mul(ky, dh), wp)), b.mul(kx, dwid))
                b.store(b.trunc(offset, I32), b.gep(offsets, [k]))

    zero = ir.Constant(vector, [0.0] * lanes)
    beta_is_zero = b.fcmp_ordered("==", beta, f32(0.0))
    with counted_loop(b, 0, m, step=tile_m, name="tr") as r0:
        dy_rows = [b.gep(flat_dy, [b.mul(smin(b, b.add(r0, i64(a)), b.sub(m, i64(1))), flat)])
                   for a in range(tile_m)]
        with counted_loop(b, 0, taps, step=tile_k, name="tk") as k0:
            tap_ids = [smin(b, b.add(k0, i64(t)), b.sub(taps, i64(1))) for t in range(tile_k)]
            x_rows = [b.gep(padded, [b.sext(b.load(b.gep(offsets, [t])), I64)]) for t in tap_ids]
            before = b.block
            loop = b.append_basic_block("gw_q")
            done = b.append_basic_block("gw_q_done")
            b.branch(loop)
            b.position_at_end(loop)
            q = b.phi(I64, name="q")
            q.add_incoming(i64(0), before)
            accumulators = [[b.phi(vector) for _ in range(tile_k)] for _ in range(tile_m)]
            position = b.mul(q, i64(lanes))
            dy_vectors = [_load_vector(b, b.gep(row, [position]), vector) for row in dy_rows]
            updated = [[None] * tile_k for _ in range(tile_m)]
            for t in range(tile_k):
                x_vector = _load_vector(b, b.gep(x_rows[t], [position]), vector)
                for a in range(tile_m):
                    updated[a][t] = b.call(fma, [dy_vectors[a], x_vector, accumulators[a][t]])
            following = b.add(q, i64(1))
            q.add_incoming(following, loop)
            for a in range(tile_m):
                for t in range(tile_k):
                    accumulators[a][t].add_incoming(zero, before)
                    accumulators[a][t].add_incoming(updated[a][t], loop)
            b.cbranch(b.icmp_signed("<", following, chunks), loop, done)
            b.position_at_end(done)
            for a in range(tile_m):
                for t in range(tile_k):
                    total = b.call(reduce_add, [f32(0.0), updated[a][t]], fastmath=("reassoc",))
                    valid = b.and_(b.icmp_signed("<", b.add(r0, i64(a)), m),
                                   b.icmp_signed("<", b.add(k0, i64(t)), taps))
                    with b.if_then(valid):
                        pointer = b.gep(dwt, [b.add(b.mul(b.add(r0, i64(a)), taps), b.add(k0, i64(t)))])
                        scaled = b.fadd(b.fmul(beta, b.load(pointer)), total)
                        b.store(b.select(beta_is_zero, total, scaled), pointer)
    b.ret_void()
    return fn


def _load_vector(b, pointer, vector):
    return b.load(b.bitcast(pointer, vector.as_pointer()), align=4)

