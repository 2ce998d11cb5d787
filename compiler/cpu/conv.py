"""conv2d and its two gradient contractions for ember's CPU target.

NCHW float32, any stride, padding, dilation and groups. Per image and group:
  conv2d              y   = W_g @ im2col(x)                       (O_g x OH*OW)
  conv2d_grad_input   dx  = col2im(W_g^T @ dy)                    (W^T is a stride swap)
  conv2d_grad_weight  dW += dy @ im2col(x)^T                      (summed over images)
Which kernel computes it: 1x1 convolutions with stride 1 and no padding are one ember_sgemm
call; with unit (column) strides the direct kernels of conv_direct.py run without any
im2col matrix; other strides build im2col/col2im in the workspace around ember_sgemm.
Images are spread over libgomp threads (each with its own slice of the caller's workspace);
with a single image the threads go to sgemm instead. The kernel code generator (cpu/program.py)
calls the entry points; the caller sizes the workspace with `conv2d_workspace_bytes`.
Where the geometry is known to take the direct path (`direct_kernel_applies`), programs call
`ember_<kind>_direct` instead: the same code without the other paths, so it needs no sgemm
and compiles in less time (a cold compile of the seed Net needs no sgemm at all).
"""
from llvmlite import ir

from ..llvm.loops import F32_PTR, I8_PTR, I32, I64, VOID, counted_loop, entry_alloca, f32, i32, i64, smax, smin
from ..loop_ir import CONV_KINDS, DIRECT_SUFFIX
from .conv_direct import (define_direct_conv, define_direct_grad_weight, emit_grad_weight_workspace_floats,
                          emit_workspace_floats, grad_weight_workspace_floats, workspace_floats)
from .openmp import GOMP
from .sgemm import (PARALLEL_MIN_FLOPS, SGEMM_THREADS_NAME, default_num_threads, define_sgemm, host_geometry,
                    load_libgomp)

KINDS = CONV_KINDS
ENTRY_NAMES = {kind: f"ember_{kind}" for kind in KINDS}


_GEOMETRY = ("n", "c", "h", "w", "o", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw", "groups")
_TASK_FIELDS = ("in0", "in1", "out", *_GEOMETRY, "workspace", "slot_floats", "gemm_threads", "partials")
_TASK_TYPES = (F32_PTR, F32_PTR, F32_PTR, *([I64] * len(_GEOMETRY)), F32_PTR, I64, I32, I64)
TASK = ir.LiteralStructType(_TASK_TYPES)


def _output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _is_pointwise(kernel, stride, padding, dilation):
    return tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0) \
        and tuple(dilation) == (1, 1)


def conv2d_workspace_bytes(kind, x_shape, w_shape, stride, padding, dilation, groups, slots=None, geometry=None):
    """Bytes of workspace ember_<kind> needs for these shapes with `slots` images in flight
    (default: default_num_threads(), capped by the batch): per slot, the direct kernel's
    scratch (conv_direct.workspace_floats) where it applies, else one im2col matrix
    (C/groups*KH*KW x OH*OW floats), plus a partial dW for conv2d_grad_weight. Pass the same
    slot count as `workspace_slots`."""
    if kind not in KINDS:
        raise ValueError(f"conv2d_workspace_bytes: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    n, c, h, w = x_shape
    o, cg, kh, kw = w_shape
    if slots is None:
        slots = max(1, min(default_num_threads(), n))
    oh = _output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = _output_size(w, kw, stride[1], padding[1], dilation[1])
    og = o // groups
    if _is_pointwise((kh, kw), stride, padding, dilation):
        scratch = 0
    elif kind == "conv2d" and stride[1] == 1:
        scratch = workspace_floats(cg, og, oh, ow, kh, kw, stride[0], dilation[0], dilation[1], geometry)
    elif kind == "conv2d_grad_input" and tuple(stride) == (1, 1):
        scratch = workspace_floats(og, cg, h, w, kh, kw, 1, dilation[0], dilation[1], geometry)
    elif kind == "conv2d_grad_weight" and tuple(stride) == (1, 1):
        scratch = grad_weight_workspace_floats(cg, og, oh, ow, kh, kw, dilation[0], dilation[1], geometry)
    else:
        scratch = cg * kh * kw * oh * ow  # the im2col matrix
    partial = o * cg * kh * kw if kind == "conv2d_grad_weight" else 0
    return 4 * slots * (scratch + partial)


class _Geometry:
    """The task's fields loaded in a function, plus derived sizes and the sgemm blocking."""

    def __init__(self, builder, task, blocking, direct_only=False):
        self.blocking = blocking
        self.direct_only = direct_only
        for name in _TASK_FIELDS:
            index = _TASK_FIELDS.index(name)
            setattr(self, name, builder.load(builder.gep(task, [i32(0), i32(index)], inbounds=True), name=name))
        b = builder
        self.cg = b.sdiv(self.c, self.groups)
        self.og = b.sdiv(self.o, self.groups)
        self.oh = b.add(b.sdiv(b.sub(b.sub(b.add(self.h, b.add(self.ph, self.ph)),
                                           b.mul(self.dh, b.sub(self.kh, i64(1)))), i64(1)), self.sh), i64(1))
        self.ow = b.add(b.sdiv(b.sub(b.sub(b.add(self.w, b.add(self.pw, self.pw)),
                                           b.mul(self.dw, b.sub(self.kw, i64(1)))), i64(1)), self.sw), i64(1))
        self.hw = b.mul(self.h, self.w)
        self.ohow = b.mul(self.oh, self.ow)
        self.ckk = b.mul(self.cg, b.mul(self.kh, self.kw))  # rows of one group's im2col matrix
        one = lambda value: b.icmp_signed("==", value, i64(1))  # noqa: E731
        zero = lambda value: b.icmp_signed("==", value, i64(0))  # noqa: E731
        self.unit_stride = b.and_(one(self.sh), one(self.sw))
        self.unit_column_stride = one(self.sw)
        self.pointwise = b.and_(b.and_(b.and_(one(self.kh), one(self.kw)), b.and_(one(self.sh), one(self.sw))),
                                b.and_(b.and_(zero(self.ph), zero(self.pw)), b.and_(one(self.dh), one(self.dw))))
        if direct_only:  # the caller guarantees the direct kernel applies (the scratch size folds)
            true, false = ir.Constant(ir.IntType(1), 1), ir.Constant(ir.IntType(1), 0)
            self.unit_stride = self.unit_column_stride = true
            self.pointwise = false


def _valid_range(builder, offset, stride, size, count):
    """[lo, hi) of t in [0, count) with 0 <= t*stride + offset < size."""
    b = builder
    minus_offset = b.sub(i64(0), offset)
    lo = b.select(b.icmp_signed("<=", minus_offset, i64(0)), i64(0),
                  b.sdiv(b.add(minus_offset, b.sub(stride, i64(1))), stride))
    last = b.sub(b.sub(size, i64(1)), offset)
    hi = b.select(b.icmp_signed("<", last, i64(0)), i64(0), b.add(b.sdiv(last, stride), i64(1)))
    hi = smin(b, hi, count)
    return smin(b, lo, hi), hi


def _window_loops(builder, geo, body):
    """For every (channel, tap, output row): calls body(row, oh, image_row_or_None, lo, hi, offset)
    where row indexes the im2col matrix, image_row is ih when it lies inside the image, and
    [lo, hi) are the output columns whose input column ow*sw + offset lies inside."""
    b = builder
    with counted_loop(b, 0, geo.cg, name="ch") as channel:
        with counted_loop(b, 0, geo.kh, name="ti") as ti:
            with counted_loop(b, 0, geo.kw, name="tj") as tj:
                row = b.add(b.mul(b.add(b.mul(channel, geo.kh), ti), geo.kw), tj)
                column_offset = b.sub(b.mul(tj, geo.dw), geo.pw)
                lo, hi = _valid_range(b, column_offset, geo.sw, geo.w, geo.ow)
                row_offset = b.sub(b.mul(ti, geo.dh), geo.ph)
                with counted_loop(b, 0, geo.oh, name="oy") as oy:
                    ih = b.add(b.mul(oy, geo.sh), row_offset)
                    inside = b.and_(b.icmp_signed(">=", ih, i64(0)), b.icmp_signed("<", ih, geo.h))
                    body(channel, row, oy, ih, inside, lo, hi, column_offset)


def _emit_im2col(builder, geo, image, col):
    """col[row, oy*OW + ox] = image[channel, ih, ox*sw + offset] (0 outside the image)."""
    b = builder

    def body(channel, row, oy, ih, inside, lo, hi, offset):
        out = b.gep(col, [b.add(b.mul(row, geo.ohow), b.mul(oy, geo.ow))])
        start, stop = b.select(inside, lo, geo.ow), b.select(inside, hi, geo.ow)
        with counted_loop(b, 0, start, name="z0") as ox:
            b.store(f32(0.0), b.gep(out, [ox]))
        source = b.gep(image, [b.add(b.mul(channel, geo.hw), b.mul(smax(b, ih, i64(0)), geo.w))])
        with b.if_else(b.icmp_signed("==", geo.sw, i64(1))) as (contiguous, strided):
            with contiguous:
                shifted = b.gep(source, [offset])
                with counted_loop(b, start, stop, name="cx") as ox:
                    b.store(b.load(b.gep(shifted, [ox])), b.gep(out, [ox]))
            with strided:
                with counted_loop(b, start, stop, name="sx") as ox:
                    b.store(b.load(b.gep(source, [b.add(b.mul(ox, geo.sw), offset)])), b.gep(out, [ox]))
        with counted_loop(b, stop, geo.ow, name="z1") as ox:
            b.store(f32(0.0), b.gep(out, [ox]))

    _window_loops(b, geo, body)


def _emit_col2im(builder, geo, col, image):
    """image[channel, ih, ox*sw + offset] += col[row, oy*OW + ox] inside the image (the
    transpose of im2col); image must be zeroed first."""
    b = builder

    def body(channel, row, oy, ih, inside, lo, hi, offset):
        source = b.gep(col, [b.add(b.mul(row, geo.ohow), b.mul(oy, geo.ow))])
        target = b.gep(image, [b.add(b.mul(channel, geo.hw), b.mul(smax(b, ih, i64(0)), geo.w))])
        stop = b.select(inside, hi, lo)
        with b.if_else(b.icmp_signed("==", geo.sw, i64(1))) as (contiguous, strided):
            with contiguous:
                shifted = b.gep(target, [offset])
                with counted_loop(b, lo, stop, name="cx") as ox:
                    pointer = b.gep(shifted, [ox])
                    b.store(b.fadd(b.load(pointer), b.load(b.gep(source, [ox]))), pointer)
            with strided:
                with counted_loop(b, lo, stop, name="sx") as ox:
                    pointer = b.gep(target, [b.add(b.mul(ox, geo.sw), offset)])
                    b.store(b.fadd(b.load(pointer), b.load(b.gep(source, [ox]))), pointer)

    _window_loops(b, geo, body)


def _define_window_copy(module, direction):
    """Internal `void ember_<direction>(task*, f32* image, f32* col)` (im2col or col2im of one
    image group), defined once per module and shared by the three entry points."""
    name = f"ember_{direction}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(VOID, [TASK.as_pointer(), F32_PTR, F32_PTR]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("optsize")  # cold copy loops: no vectoriser versions (halves compile time)
    task, image, col = fn.args
    image.add_attribute("noalias")
    col.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    geo = _Geometry(b, task, None)  # sizes only
    if direction == "im2col":
        _emit_im2col(b, geo, image, col)
    else:
        _emit_col2im(b, geo, col, image)
    b.ret_void()
    return fn


def _emit_image(builder, kind, geo, sgemm, image, slot, first, task):
    """All groups of one image for `kind`; slot is this thread's workspace slice; first says
    whether this is the thread's first image (grad_weight starts its sum there). The direct
    kernel runs where it applies; a pointwise convolution is one sgemm; the rest go through
    im2col (col2im) and sgemm. A direct-only piece builds the direct path alone."""
    b = builder
    # the direct kernel packs the weights once per thread when one group reuses its scratch
    prepare = b.zext(b.or_(first, b.icmp_signed("!=", geo.groups, i64(1))), I64)
    with counted_loop(b, 0, geo.groups, name="group") as group:
        if kind == "conv2d":
            x = b.gep(geo.in0, [b.mul(b.add(b.mul(image, geo.c), b.mul(group, geo.cg)), geo.hw)])
            weight = b.gep(geo.in1, [b.mul(b.mul(group, geo.og), geo.ckk)])
            y = b.gep(geo.out, [b.mul(b.add(b.mul(image, geo.o), b.mul(group, geo.og)), geo.ohow)])
            if geo.direct_only:
                _emit_direct_conv(b, geo, x, weight, y, slot, prepare)
            else:
                _emit_conv_paths(b, geo, sgemm, task, x, weight, y, slot, prepare)
        elif kind == "conv2d_grad_input":
            dy = b.gep(geo.in0, [b.mul(b.add(b.mul(image, geo.o), b.mul(group, geo.og)), geo.ohow)])
            weight = b.gep(geo.in1, [b.mul(b.mul(group, geo.og), geo.ckk)])
            dx = b.gep(geo.out, [b.mul(b.add(b.mul(image, geo.c), b.mul(group, geo.cg)), geo.hw)])
            if geo.direct_only:
                _emit_direct_grad_input(b, geo, dy, weight, dx, slot, prepare)
            else:
                _emit_grad_input_paths(b, geo, sgemm, task, dy, weight, dx, slot, prepare)
        else:
            x = b.gep(geo.in0, [b.mul(b.add(b.mul(image, geo.c), b.mul(group, geo.cg)), geo.hw)])
            dy = b.gep(geo.in1, [b.mul(b.add(b.mul(image, geo.o), b.mul(group, geo.og)), geo.ohow)])
            scratch_floats = _emit_scratch_floats(b, kind, geo)
            partial = b.select(b.icmp_signed("!=", geo.partials, i64(0)), b.gep(slot, [scratch_floats]), geo.out)
            dw = b.gep(partial, [b.mul(b.mul(group, geo.og), geo.ckk)])
            beta = b.select(first, f32(0.0), f32(1.0))
            if geo.direct_only:
                _emit_direct_grad_weight(b, geo, x, dy, dw, beta, slot)
            else:
                _emit_grad_weight_paths(b, geo, sgemm, task, x, dy, dw, beta, slot)


def _emit_direct_conv(b, geo, x, weight, y, col, prepare):
    b.call(define_direct_conv(b.module, geo.blocking), [
        x, geo.cg, geo.h, geo.w, geo.ph, geo.pw, weight, geo.og, i64(0),
        y, geo.oh, geo.ow, geo.kh, geo.kw, geo.dh, geo.dw, geo.sh, col, prepare])


def _emit_conv_paths(b, geo, sgemm, task, x, weight, y, col, prepare):
    """conv2d of one group: pointwise (one sgemm), direct (unit column stride), or im2col."""
    threads = geo.gemm_threads
    with b.if_else(geo.pointwise) as (pointwise, windowed):
        with pointwise:
            b.call(sgemm, [geo.og, geo.ohow, geo.ckk, weight, geo.ckk, i64(1), x, geo.hw, i64(1),
                           y, geo.ohow, f32(0.0), threads])
        with windowed:
            with b.if_else(geo.unit_column_stride) as (direct, unfolded):
                with direct:
                    _emit_direct_conv(b, geo, x, weight, y, col, prepare)
                with unfolded:
                    b.call(_define_window_copy(b.module, "im2col"), [task, x, col])
                    b.call(sgemm, [geo.og, geo.ohow, geo.ckk, weight, geo.ckk, i64(1), col, geo.ohow,
                                   i64(1), y, geo.ohow, f32(0.0), threads])


def _emit_direct_grad_input(b, geo, dy, weight, dx, col, prepare):
    """dx = conv(dy padded by the kernel extent, rotated W^T): the direct kernel (unit strides)."""
    top = b.sub(b.mul(b.sub(geo.kh, i64(1)), geo.dh), geo.ph)
    left = b.sub(b.mul(b.sub(geo.kw, i64(1)), geo.dw), geo.pw)
    b.call(define_direct_conv(b.module, geo.blocking), [
        dy, geo.og, geo.oh, geo.ow, top, left, weight, geo.cg, i64(1),
        dx, geo.h, geo.w, geo.kh, geo.kw, geo.dh, geo.dw, i64(1), col, prepare])


def _emit_grad_input_paths(b, geo, sgemm, task, dy, weight, dx, col, prepare):
    """conv2d_grad_input of one group: pointwise (dx = W_g^T @ dy), direct, or sgemm and col2im."""
    threads = geo.gemm_threads
    with b.if_else(geo.pointwise) as (pointwise, windowed):
        with pointwise:
            b.call(sgemm, [geo.ckk, geo.ohow, geo.og, weight, i64(1), geo.ckk, dy, geo.ohow, i64(1),
                           dx, geo.ohow, f32(0.0), threads])
        with windowed:
            with b.if_else(geo.unit_stride) as (direct, folded):
                with direct:
                    _emit_direct_grad_input(b, geo, dy, weight, dx, col, prepare)
                with folded:
                    b.call(sgemm, [geo.ckk, geo.ohow, geo.og, weight, i64(1), geo.ckk, dy, geo.ohow,
                                   i64(1), col, geo.ohow, f32(0.0), threads])
                    with counted_loop(b, 0, b.mul(geo.cg, geo.hw), name="zx") as index:
                        b.store(f32(0.0), b.gep(dx, [index]))
                    b.call(_define_window_copy(b.module, "col2im"), [task, dx, col])


def _emit_direct_grad_weight(b, geo, x, dy, dw, beta, col):
    b.call(define_direct_grad_weight(b.module, geo.blocking), [
        x, dy, dw, geo.cg, geo.og, geo.h, geo.w, geo.oh, geo.ow, geo.kh, geo.kw,
        geo.dh, geo.dw, geo.ph, geo.pw, beta, col])


def _emit_grad_weight_paths(b, geo, sgemm, task, x, dy, dw, beta, col):
    """conv2d_grad_weight of one group: pointwise (dW_g += dy @ x^T), direct, or im2col and sgemm."""
    threads = geo.gemm_threads
    with b.if_else(geo.pointwise) as (pointwise, windowed):
        with pointwise:
            b.call(sgemm, [geo.og, geo.ckk, geo.ohow, dy, geo.ohow, i64(1), x, i64(1), geo.hw,
                           dw, geo.ckk, beta, threads])
        with windowed:
            with b.if_else(geo.unit_stride) as (direct, unfolded):
                with direct:
                    _emit_direct_grad_weight(b, geo, x, dy, dw, beta, col)
                with unfolded:
                    b.call(_define_window_copy(b.module, "im2col"), [task, x, col])
                    b.call(sgemm, [geo.og, geo.ckk, geo.ohow, dy, geo.ohow, i64(1), col, i64(1),
                                   geo.ohow, dw, geo.ckk, beta, threads])


def _define_slice(module, name, kind, sgemm, blocking, direct_only):
    """void slice(task*, i32 t, i32 T): images [N*t/T, N*(t+1)/T) with workspace slot t."""
    fn = ir.Function(module, ir.FunctionType(VOID, [TASK.as_pointer(), I32, I32]), name=f"{name}_slice")
    fn.linkage = "internal"
    task, thread, threads = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    geo = _Geometry(b, task, blocking, direct_only)
    t, count = b.sext(thread, I64), b.sext(threads, I64)
    first = b.sdiv(b.mul(geo.n, t), count)
    end = b.sdiv(b.mul(geo.n, b.add(t, i64(1))), count)
    slot = b.gep(geo.workspace, [b.mul(t, geo.slot_floats)])
    with counted_loop(b, first, end, name="image") as image:
        _emit_image(b, kind, geo, sgemm, image, slot, b.icmp_signed("==", image, first), task)
    b.ret_void()
    return fn


def direct_kernel_applies(kind, kernel, stride, padding, dilation):
    """Does ember_<kind> run the direct kernel for this geometry (not 1x1 pointwise; unit column
    stride for conv2d, unit strides for the gradients)? Then ember_<kind>_direct, which has
    only that path and needs no sgemm, serves it."""
    if _is_pointwise(kernel, stride, padding, dilation):
        return False
    return stride[1] == 1 if kind == "conv2d" else tuple(stride) == (1, 1)


def define_conv2d(module, kind="conv2d", parallel=None, geometry=None, direct_only=False):
    """Add (once) and return ember_conv2d, ember_conv2d_grad_input or ember_conv2d_grad_weight
    (and ember_sgemm, which they call) to an llvmlite module. Signature:

    void ember_<kind>(const f32* in0, const f32* in1, f32* out,
                      i64 N, i64 C, i64 H, i64 W, i64 O, i64 KH, i64 KW,
                      i64 stride_h, i64 stride_w, i64 pad_h, i64 pad_w, i64 dilation_h, i64 dilation_w,
                      i64 groups, f32* workspace, i64 workspace_slots, i32 num_threads)

      conv2d:             in0 = x [N,C,H,W],    in1 = weight [O,C/groups,KH,KW], out = y  [N,O,OH,OW]
      conv2d_grad_input:  in0 = dy [N,O,OH,OW], in1 = weight,                    out = dx [N,C,H,W]
      conv2d_grad_weight: in0 = x,              in1 = dy,                        out = dW [O,C/groups,KH,KW]

    OH = (H + 2*pad_h - dilation_h*(KH-1) - 1) / stride_h + 1 (OW alike). `out` is overwritten.
    `workspace` holds `workspace_slots` per-thread slots of conv2d_workspace_bytes(..., slots=1)
    bytes each (any alignment of 4); at most that many images run at once. num_threads 0 means
    libgomp's default (OMP_NUM_THREADS or all CPUs).
    """
    if kind not in KINDS:
        raise ValueError(f"define_conv2d: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    name = ENTRY_NAMES[kind] + (DIRECT_SUFFIX if direct_only else "")
    if name in module.globals:
        return module.globals[name]
    if parallel is None:
        parallel = load_libgomp() is not None
    blocking = geometry or host_geometry()
    if direct_only:  # the direct path calls no sgemm: a declaration keeps the slice's signature
        sgemm = module.globals.get(SGEMM_THREADS_NAME) or ir.Function(
            module, ir.FunctionType(VOID, [I64, I64, I64, F32_PTR, I64, I64, F32_PTR, I64, I64, F32_PTR, I64,
                                           ir.FloatType(), I32]), name=SGEMM_THREADS_NAME)
    else:
        define_sgemm(module, blocking, parallel)
        sgemm = module.globals[SGEMM_THREADS_NAME]
    gomp = GOMP(module) if parallel else None
    slice_fn = _define_slice(module, name, kind, sgemm, blocking, direct_only)

    arguments = [F32_PTR, F32_PTR, F32_PTR] + [I64] * len(_GEOMETRY) + [F32_PTR, I64, I32]
    fn = ir.Function(module, ir.FunctionType(VOID, arguments), name=name)
    in0, in1, out, *geometry, workspace, slots, requested = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    task = entry_alloca(b, TASK, 1, name="task")

    def set_field(field, value):
        b.store(value, b.gep(task, [i32(0), i32(_TASK_FIELDS.index(field))], inbounds=True))

    for field, value in zip(("in0", "in1", "out", *_GEOMETRY), (in0, in1, out, *geometry)):
        set_field(field, value)
    geo = _Geometry(b, task, blocking, direct_only)  # derived sizes (the fields read back are the ones just stored)
    col_floats = _emit_scratch_floats(b, kind, geo)
    partial_floats = i64(0) if kind != "conv2d_grad_weight" else b.mul(geo.o, geo.ckk)
    set_field("workspace", workspace)
    set_field("slot_floats", b.add(col_floats, partial_floats))

    flops = b.mul(b.mul(b.mul(geo.n, geo.o), b.mul(geo.ckk, geo.ohow)), i64(2))
    threads = i32(1)
    if parallel:
        default = b.call(gomp.max_threads, [])
        threads = b.select(b.icmp_signed(">", requested, i32(0)), requested, default)
        threads = b.select(b.icmp_signed("<", flops, i64(PARALLEL_MIN_FLOPS)), i32(1), threads)
        threads = b.trunc(smin(b, smin(b, b.sext(threads, I64), slots), geo.n), I32)
        threads = b.select(b.icmp_signed("<", threads, i32(1)), i32(1), threads)
    image_parallel = b.icmp_signed(">", threads, i32(1))
    # one image at a time: sgemm gets the threads; several: each image's sgemm runs on one
    set_field("gemm_threads", b.select(image_parallel, i32(1), requested))
    set_field("partials", b.zext(image_parallel, I64))
    if kind == "conv2d_grad_weight":
        with b.if_then(b.icmp_signed("==", geo.n, i64(0))):  # an empty batch: dW = 0
            with counted_loop(b, 0, b.mul(geo.o, geo.ckk), name="zw") as index:
                b.store(f32(0.0), b.gep(out, [index]))
            b.ret_void()
    if parallel:
        worker = ir.Function(module, ir.FunctionType(VOID, [I8_PTR]), name=f"{name}_worker")
        worker.linkage = "internal"
        wb = ir.IRBuilder(worker.append_basic_block("entry"))
        wb.call(slice_fn, [wb.bitcast(worker.args[0], TASK.as_pointer()),
                           wb.call(gomp.thread_num, []), wb.call(gomp.num_threads, [])])
        wb.ret_void()
        with b.if_else(image_parallel) as (many, one):
            with many:
                b.call(gomp.parallel, [worker, b.bitcast(task, I8_PTR), threads, i32(0)])
            with one:
                b.call(slice_fn, [task, i32(0), i32(1)])
    else:
        b.call(slice_fn, [task, i32(0), i32(1)])
    if kind == "conv2d_grad_weight":  # dW = sum of the threads' partial sums
        with b.if_then(image_parallel):
            _emit_partial_sum(b, out, workspace, col_floats, b.add(col_floats, partial_floats), partial_floats,
                              b.sext(threads, I64))
    b.ret_void()
    return fn


def _emit_scratch_floats(b, kind, geo):
    """Floats of one slot's scratch (before grad_weight's partial dW): as conv2d_workspace_bytes."""
    unfolded = b.mul(geo.ckk, geo.ohow)
    if kind == "conv2d":
        direct = emit_workspace_floats(b, geo.cg, geo.og, geo.oh, geo.ow, geo.kh, geo.kw, geo.sh, geo.dh, geo.dw,
                                       geo.blocking)
        windowed = b.select(geo.unit_column_stride, direct, unfolded)
    elif kind == "conv2d_grad_input":
        direct = emit_workspace_floats(b, geo.og, geo.cg, geo.h, geo.w, geo.kh, geo.kw, i64(1), geo.dh, geo.dw,
                                       geo.blocking)
        windowed = b.select(geo.unit_stride, direct, unfolded)
    else:
        direct = emit_grad_weight_workspace_floats(b, geo.cg, geo.og, geo.oh, geo.ow, geo.kh, geo.kw, geo.dh, geo.dw,
                                                   geo.blocking)
        windowed = b.select(geo.unit_stride, direct, unfolded)
    return b.select(geo.pointwise, i64(0), windowed)


def _emit_partial_sum(builder, out, workspace, col_floats, slot_floats, partial_floats, count):
    """out[i] = sum over slots s < count of workspace[s*slot_floats + col_floats + i]."""
    b = builder
    first = b.gep(workspace, [col_floats])
    with counted_loop(b, 0, partial_floats, name="copy") as index:
        b.store(b.load(b.gep(first, [index])), b.gep(out, [index]))
    with counted_loop(b, 1, count, name="slot") as slot:
        partial = b.gep(first, [b.mul(slot, slot_floats)])
        with counted_loop(b, 0, partial_floats, name="add") as index:
            pointer = b.gep(out, [index])
            b.store(b.fadd(b.load(pointer), b.load(b.gep(partial, [index]))), pointer)
