"""Lowering of contraction groups (matmul, conv2d and its two gradients) and window groups
(fold_windows), a part of compiler/lowering.py's group lowering.

float32 contractions call the target's library (for the CPU, compiler/cpu/library.py): a Gemm
(`ember_sgemm_threads`) on strided views of the operands (a prologue of index-map movement ops
costs nothing when it is a strided view, else the operand is materialised into scratch), and
a ConvCall (conv2d, conv2d_grad_input, conv2d_grad_weight) on contiguous NCHW operands. The output goes
straight into the group's root buffer when the epilogue keeps its layout (the epilogue then
runs in place), else into scratch. Small matmuls and those of a few rows with k-contiguous
operands (a Linear layer at batch 1) run as loops instead, as do other dtypes: each output
element a sum of products over the contracted axes, with guarded loads for padding.
"""
from ember.ops import PRIMITIVES
from ember.ir.symbols import hint, is_symbolic
from . import loop_ir as L
from .loop_nests import (Scope, broadcast_index, count, downstream, in_range, nest_into, pad_vars,
                         same_strides, strides_of)

GEMM_MIN_WORK = 4096  # m*n*k below which a float32 matmul runs as loops
DOT_PRODUCT_ROWS = 4  # matmuls of at most this many rows with k-contiguous operands run as loops


class ContractionLowering:
    """Mixin of _GroupLowering: contractions as loops or packed-kernel calls, fold_windows."""

    # ------------------------------------------------------------------ as loops
    def sum_of_products(self, node, idx, scope, extents, product):
        return self.reduction(scope, list(idx), extents, "add", node.dtype, product)

    def loops_matmul(self, node, idx, scope):
        a, b = (self.graph.node(i) for i in node.inputs)
        *batch, m, n = idx
        a_idx = broadcast_index(tuple(batch) + (None,), a.shape[:-1], node.shape[:-1])[:-1]
        b_idx = broadcast_index(tuple(batch) + (None,), b.shape[:-1], node.shape[:-1])[:-1]

        def product(inner, r):
            (k,) = r if r else (L.index(0),)
            return L.apply("mul", self.value(a.id, a_idx + (m, k), inner), self.value(b.id, b_idx + (k, n), inner))
        return self.sum_of_products(node, idx, scope, (a.shape[-1],), product)

    def loops_conv2d(self, node, idx, scope, stride, padding, dilation, groups):
        x, w = (self.graph.node(i) for i in node.inputs)
        n, o, y, xx = idx
        cg, kh, kw = w.shape[1:]
        og = w.shape[0] // groups
        base = L.imul(L.ifloordiv(o, og), cg)

        def product(inner, r):
            c, i, j = pad_vars(r, (cg, kh, kw))
            h = L.iadd(L.imul(y, stride[0]), L.imul(i, dilation[0]), -padding[0])
            ww = L.iadd(L.imul(xx, stride[1]), L.imul(j, dilation[1]), -padding[1])
            inside, (hc, wc) = in_range((h, ww), x.shape[2:])
            xv = L.select(inside, self.value(x.id, (n, L.iadd(base, c), hc, wc), inner), L.const(0, x.dtype))
            return L.apply("mul", xv, self.value(w.id, (o, c, i, j), inner))
        return self.sum_of_products(node, idx, scope, (cg, kh, kw), product)

    def loops_conv2d_grad_input(self, node, idx, scope, input_shape, stride, padding, dilation, groups):
        g, w = (self.graph.node(i) for i in node.inputs)
        n, c, h, ww = idx
        cg, kh, kw = w.shape[1:]
        og = w.shape[0] // groups
        group_of_c, ci = L.ifloordiv(c, cg), L.imod(c, cg)
        oh_size, ow_size = g.shape[2:]

        def product(inner, r):
            o, i, j = pad_vars(r, (og, kh, kw))
            conds, pos = [], []
            for t, s, size in ((L.iadd(h, padding[0], L.imul(i, -dilation[0])), stride[0], oh_size),
                               (L.iadd(ww, padding[1], L.imul(j, -dilation[1])), stride[1], ow_size)):
                conds += [L.icompare("ge", t, 0), L.icompare("lt", L.ifloordiv(t, s), size)]
                if s > 1:
                    conds.append(L.icompare("eq", L.imod(t, s), 0))
                pos.append(L.clamp(L.ifloordiv(t, s), 0, size - 1))
            oo = L.iadd(L.imul(group_of_c, og), o)
            gv = L.select(L.logical_and(*conds), self.value(g.id, (n, oo, *pos), inner), L.const(0, g.dtype))
            return L.apply("mul", gv, self.value(w.id, (oo, ci, i, j), inner))
        return self.sum_of_products(node, idx, scope, (og, kh, kw), product)

    def loops_conv2d_grad_weight(self, node, idx, scope, weight_shape, stride, padding, dilation, groups):
        x, g = (self.graph.node(i) for i in node.inputs)
        o, c, i, j = idx
        og = weight_shape[0] // groups
        cg = weight_shape[1]
        channel = L.iadd(L.imul(L.ifloordiv(o, og), cg), c)

        def product(inner, r):
            n, oh, ow = pad_vars(r, (g.shape[0],) + tuple(g.shape[2:]))
            h = L.iadd(L.imul(oh, stride[0]), L.imul(i, dilation[0]), -padding[0])
            ww = L.iadd(L.imul(ow, stride[1]), L.imul(j, dilation[1]), -padding[1])
            inside, (hc, wc) = in_range((h, ww), x.shape[2:])
            xv = L.select(inside, self.value(x.id, (n, channel, hc, wc), inner), L.const(0, x.dtype))
            return L.apply("mul", self.value(g.id, (n, o, oh, ow), inner), xv)
        return self.sum_of_products(node, idx, scope, (g.shape[0],) + tuple(g.shape[2:]), product)

    def fold_windows(self, node, idx, scope, size, stride, dilation):
        """Each output position sums the window entries that cover it (a gather). Where the
        windows do not overlap (pooling's stride >= window span) that is at most one entry,
        found by division instead of a search over the window."""
        g = self.graph.node(node.inputs[0])
        *lead, oh_size, ow_size, kh, kw = g.shape
        *lead_idx, h, w = idx
        if all(s >= d * (k - 1) + 1 for s, d, k in zip(stride, dilation, (kh, kw))):
            conds, pos, offsets = [], [], []
            for t, s, d, n, k in ((h, stride[0], dilation[0], oh_size, kh), (w, stride[1], dilation[1], ow_size, kw)):
                window, within = L.ifloordiv(t, s), L.imod(t, s)
                conds += [L.icompare("lt", window, n), L.icompare("lt", L.ifloordiv(within, d), k)]
                if d > 1:
                    conds.append(L.icompare("eq", L.imod(within, d), 0))
                pos.append(L.clamp(window, 0, n - 1))
                offsets.append(L.clamp(L.ifloordiv(within, d), 0, k - 1))
            value = self.value(g.id, tuple(lead_idx) + tuple(pos) + tuple(offsets), scope)
            return L.select(L.logical_and(*conds), value, L.const(0, g.dtype))

        def body(inner, r):
            i, j = pad_vars(r, (kh, kw))
            conds, pos = [], []
            for t, s, n in ((L.isub(h, L.imul(i, dilation[0])), stride[0], oh_size),
                            (L.isub(w, L.imul(j, dilation[1])), stride[1], ow_size)):
                conds += [L.icompare("ge", t, 0), L.icompare("lt", L.ifloordiv(t, s), n)]
                if s > 1:
                    conds.append(L.icompare("eq", L.imod(t, s), 0))
                pos.append(L.clamp(L.ifloordiv(t, s), 0, n - 1))
            value = self.value(g.id, tuple(lead_idx) + tuple(pos) + (i, j), inner)
            return L.select(L.logical_and(*conds), value, L.const(0, g.dtype))
        return self.reduction(scope, list(idx), (kh, kw), "add", node.dtype, body)

    # ------------------------------------------------------------------ contractions through sgemm
    def gemm_applies(self, anchor):
        """float32 contractions call the packed kernels, except matrix products too small to
        pay for packing, and products of few rows whose operands both run contiguously along
        k (a Linear layer at batch 1: dot products vectorise better than packing). Only where
        the target's library offers that call."""
        if anchor.dtype != "float32" or 0 in anchor.shape or anchor.op not in self.library.calls:
            return False
        if anchor.op != "matmul":
            return True
        m, n = hint(anchor.shape[-2:])  # (a symbolic size at its estimate: this only chooses a kernel)
        k = hint(self.graph.node(anchor.inputs[0]).shape[-1])
        if k == 0 or m * n * k < GEMM_MIN_WORK:
            return False
        if m <= DOT_PRODUCT_ROWS:
            a_view, b_view = self.strided_view(anchor.inputs[0]), self.strided_view(anchor.inputs[1])
            if a_view and b_view and a_view[2][-1] in (0, 1) and b_view[2][-2] in (0, 1):
                return False
        return True

    def strided_view(self, node_id):
        """(offset, strides) when node's value is slot[offset + sum(i_k * strides_k)], else None."""
        node = self.graph.node(node_id)
        symbols = tuple(L.var(f"v{k}", d) for k, d in enumerate(node.shape))
        probe = Scope([], [])
        value = self.value(node_id, symbols, probe)
        if probe.top or value.op != "load":
            return None
        terms, constant = L.terms_of(value.args[0])
        if any(a.op != "var" or a not in symbols for a in terms):
            return None
        return value.attr, constant, tuple(terms.get(s, 0) for s in symbols)

    def operand_view(self, node_id, body):
        """(slot, offset, strides) of a contraction operand, materialised if it must be."""
        view = self.strided_view(node_id)
        if view is not None:
            return view
        node = self.graph.node(node_id)
        slot = self.scratch_slot(node.dtype, count(node.shape))
        self.store_nest(node_id, slot, body)
        return slot, 0, strides_of(node.shape)

    def output_slot(self, anchor):
        """Where the contraction writes: the root's buffer when the epilogue keeps its shape,
        layout and dtype (then it runs in place), else scratch (a float64 or bool root cannot
        hold sgemm's float32 products while the epilogue reads them)."""
        group = self.group
        if self.graph.node(group.root).dtype != anchor.dtype:
            return self.scratch_slot(anchor.dtype, count(anchor.shape))
        spine_keeps_layout = all(PRIMITIVES[self.graph.node(n).op].kind == "elementwise"
                                 and tuple(self.graph.node(n).shape) == tuple(anchor.shape)
                                 for n in group.epilogue if n in downstream(self.graph, group, anchor.id))
        if group.root == anchor.id or spine_keeps_layout:
            return self.root_slot()
        return self.scratch_slot(anchor.dtype, count(anchor.shape))

    def transposes_first(self, anchor):
        """Does the epilogue transpose a 2-d matmul's output and then keep its shape (a weight
        gradient x^T @ g stored as [out, in])? Then the product is computed transposed,
        straight into the root's buffer: (a @ b)^T = b^T @ a^T costs only swapped strides."""
        graph, group = self.graph, self.group
        if anchor.op != "matmul" or len(anchor.shape) != 2 or group.root == anchor.id:
            return False
        if graph.node(group.root).dtype != anchor.dtype:  # (the root's buffer holds another dtype)
            return False
        users = [u for u in graph.users(anchor.id) if u in self.members]
        first = graph.node(users[0]) if len(users) == 1 else None
        if first is None or first.op != "permute" or tuple(first.attrs["perm"]) != (1, 0):
            return False
        rest = downstream(graph, group, first.id) - {first.id}
        return all(PRIMITIVES[graph.node(n).op].kind == "elementwise" and graph.node(n).shape == first.shape
                   for n in rest)

    def lower_contraction_gemm(self, anchor, body):
        if self.transposes_first(anchor):
            out_slot = self.root_slot()
            self.gemm_matmul(anchor, out_slot, body, transposed=True)
            self.loaded_from[anchor.id] = (self.slots[out_slot].key, (1, anchor.shape[0]))
            self.store_nest(self.group.root, out_slot, body,
                            extra=tuple(o for o in self.group.outputs if o != self.group.root))
            return
        out_slot = self.output_slot(anchor)
        getattr(self, "gemm_" + anchor.op)(anchor, out_slot, body, **anchor.attrs)
        if self.group.root != anchor.id:
            self.loaded_from[anchor.id] = (self.slots[out_slot].key, None)
            self.store_root(body)

    def gemm_matmul(self, node, out_slot, body, transposed=False):
        """c = a @ b per batch index; `transposed` writes c^T (2-d only) as b^T @ a^T."""
        a, b = (self.graph.node(i) for i in node.inputs)
        a_slot, a_off, a_strides = self.operand_view(a.id, body)
        b_slot, b_off, b_strides = self.operand_view(b.id, body)
        *batch, m, n = node.shape
        k = a.shape[-1]
        if not transposed and _rows_merge(a.shape, a_strides, node.shape, b.shape, b_strides):
            # one matrix times a stack (a Linear layer on [batch, tokens, features]) whose rows
            # lie evenly spaced: one product over all the rows, as PyTorch folds it
            rows = m * count(tuple(batch))
            nest_into(body, [], L.Gemm(rows, n, k, L.View(a_slot, L.iadd(a_off), a_strides[-2], a_strides[-1]),
                                       L.View(b_slot, L.iadd(b_off), b_strides[-2], b_strides[-1]),
                                       L.View(out_slot, L.iadd(0), n, 1)))
            return
        bidx, loops = self.loop_nest(tuple(batch), prefix="b")
        if loops and self.library.gemm_runs_alone(*hint((m, n, k))):  # (attention's per-head products)
            loops[0].parallel = True
        a_batch = broadcast_index(tuple(bidx) + (None,), a.shape[:-1], node.shape[:-1])[:-1]
        b_batch = broadcast_index(tuple(bidx) + (None,), b.shape[:-1], node.shape[:-1])[:-1]
        a_at = L.iadd(a_off, *[L.imul(i, s) for i, s in zip(a_batch, a_strides)])
        b_at = L.iadd(b_off, *[L.imul(i, s) for i, s in zip(b_batch, b_strides)])
        c_at = L.iadd(*[L.imul(i, s) for i, s in zip(bidx, strides_of(node.shape)[:-2])])
        if transposed:
            gemm = L.Gemm(n, m, k, L.View(b_slot, b_at, b_strides[-1], b_strides[-2]),
                          L.View(a_slot, a_at, a_strides[-1], a_strides[-2]), L.View(out_slot, c_at, m, 1))
            nest_into(body, loops, gemm)
            return
        gemm = L.Gemm(m, n, k, L.View(a_slot, a_at, a_strides[-2], a_strides[-1]),
                      L.View(b_slot, b_at, b_strides[-2], b_strides[-1]), L.View(out_slot, c_at, n, 1))
        nest_into(body, loops, gemm)

    def contiguous_operand(self, node_id, body):
        """The slot holding node's value in row-major order (scratch if it must be copied)."""
        view = self.strided_view(node_id)
        shape = self.graph.node(node_id).shape
        if view is not None and view[1] == 0 and same_strides(view[2], strides_of(shape), shape):
            return view[0]
        node = self.graph.node(node_id)
        slot = self.scratch_slot(node.dtype, count(node.shape))
        self.store_nest(node_id, slot, body)
        return slot

    def conv_call(self, kind, out_slot, body, in0, in1, x_shape, w_shape, stride, padding, dilation, groups):
        """A call of the library's convolution `kind` on contiguous operands (its direct-only
        entry where the geometry takes that path)."""
        first = self.contiguous_operand(in0, body)
        second = self.contiguous_operand(in1, body)
        # (images in flight: one per thread, fewer for a small batch; a symbolic batch may be large)
        slots = self.threads if is_symbolic(x_shape[0]) else max(1, min(self.threads, x_shape[0]))
        workspace_bytes = self.library.conv_workspace_bytes(kind, x_shape, w_shape, stride, padding, dilation,
                                                            groups, slots)
        workspace = self.scratch_slot("float32", max(workspace_bytes // 4, 1))
        geometry = tuple(x_shape) + (w_shape[0],) + tuple(w_shape[2:]) + tuple(stride) + tuple(padding) \
            + tuple(dilation) + (groups,)
        if self.library.direct_conv_applies(kind, tuple(w_shape[2:]), stride, padding, dilation):
            kind += L.DIRECT_SUFFIX
        body.append(L.ConvCall(kind, first, second, out_slot, tuple(g if is_symbolic(g) else int(g) for g in geometry),
                               workspace, slots))

    def gemm_conv2d(self, node, out_slot, body, stride, padding, dilation, groups):
        x, w = (self.graph.node(i) for i in node.inputs)
        self.conv_call("conv2d", out_slot, body, x.id, w.id, x.shape, w.shape, stride, padding, dilation, groups)

    def gemm_conv2d_grad_input(self, node, out_slot, body, input_shape, stride, padding, dilation, groups):
        g, w = (self.graph.node(i) for i in node.inputs)
        self.conv_call("conv2d_grad_input", out_slot, body, g.id, w.id, input_shape, w.shape, stride, padding,
                       dilation, groups)

    def gemm_conv2d_grad_weight(self, node, out_slot, body, weight_shape, stride, padding, dilation, groups):
        x, g = (self.graph.node(i) for i in node.inputs)
        self.conv_call("conv2d_grad_weight", out_slot, body, x.id, g.id, x.shape, weight_shape, stride, padding,
                       dilation, groups)


def _rows_merge(a_shape, a_strides, out_shape, b_shape, b_strides):
    """Is a batched matmul one product of all of `a`'s rows with one matrix: `b` the same for
    every batch index (no batch dims, or broadcast ones), `a` not broadcast, and `a`'s batch
    and row axes stepping through memory evenly (batch stride = rows * row stride)?"""
    batch = len(out_shape) - 2
    if batch == 0 or len(a_shape) != len(out_shape) or tuple(a_shape[:-1]) != tuple(out_shape[:-1]):
        return False
    if any(size != 1 and stride != 0 for size, stride in zip(b_shape[:-2], b_strides[:-2])):
        return False
    # the batch and row axes of more than one element, each stepping over all of the next one
    axes = [d for d in range(batch + 1) if a_shape[d] != 1]
    return all(a_strides[d] == a_strides[e] * a_shape[e] for d, e in zip(axes, axes[1:]))
