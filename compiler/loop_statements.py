"""Loop-nest kernel statements: what compiler/lowering.py builds from the loop IR's expressions
(compiler/loop_ir.py) and every target's code generator walks. A `Kernel` is one fused group:
loops, accumulators, stores, bounds checks, matrix-multiply and convolution calls and numpy
callbacks over numbered buffer slots. Loop extents and call sizes are ints, or in a dynamic
program expressions of size symbols (loop_ir `size_of`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .loop_ir import Expr


@dataclass
class Loop:
    """for var in range(extent): body. `parallel`: iterations are independent (the code
    generator may split them across threads)."""

    var: Expr
    body: list = field(default_factory=list)
    parallel: bool = False

    @property
    def extent(self):
        """The trip count: an int, or an index Expr of size symbols in a dynamic program."""
        return self.var.attr[1]

    @property
    def name(self):
        return self.var.attr[0]


@dataclass
class Declare:
    """A scalar accumulator, set to `init` (`acc(name)` reads it)."""

    name: str
    dtype: str
    init: Expr


@dataclass
class Update:
    """name = combine(name, value), combine in add/mul/max/min; for argmax/argmin `position`
    is the candidate index and `index_name` the accumulator holding the best one."""

    name: str
    combine: str
    value: Expr
    position: Expr = None
    index_name: str = None


@dataclass
class Store:
    """slot[offset] = value (or += value when combine == "add")."""

    slot: int
    offset: Expr
    value: Expr
    combine: str = None


@dataclass
class Check:
    """Stop with error `error` (an index into Kernel.errors) unless `cond` holds."""

    cond: Expr
    error: int


@dataclass
class View:
    """A strided 2-d operand of a matrix multiply: element (r, c) is slot[offset + r*rows + c*cols]."""

    slot: int
    offset: Expr
    rows: int
    cols: int


@dataclass
class Gemm:
    """c = a @ b (m x k times k x n) + beta * c, float32."""

    m: int
    n: int
    k: int
    a: View
    b: View
    c: View
    beta: float = 0.0


CONV_KINDS = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")  # ConvCall kinds, cpu/conv.py's entries
DIRECT_SUFFIX = "_direct"  # kind + suffix: the entry with only the direct path (cpu/conv.py direct_kernel_applies)


@dataclass
class ConvCall:
    """One of compiler/cpu/conv.py's kernels: kind conv2d (in0 = x, in1 = weight, out = y),
    conv2d_grad_input (in0 = dy, in1 = weight, out = dx) or conv2d_grad_weight (in0 = x,
    in1 = dy, out = dW), with suffix _direct where the geometry takes the direct path only;
    contiguous NCHW float32 slots; `geometry` is (N, C, H, W, O, KH,
    KW, stride h/w, padding h/w, dilation h/w, groups); `workspace` a scratch slot of
    `workspace_slots` per-thread parts."""

    kind: str
    in0: int
    in1: int
    out: int
    geometry: tuple
    workspace: int
    workspace_slots: int


@dataclass
class Callback:
    """Run node `node`'s numpy implementation from Python: a host-only primitive `op`."""

    node: int
    op: str = ""


@dataclass
class Slot:
    """A buffer a kernel reads or writes: `key` is an IR node id, or for group-private memory
    ("scratch", group id, number, dtype, elements, byte offset in the group's scratch)."""

    key: object
    dtype: str
    size: int  # elements
    writes: bool = False


@dataclass
class Kernel:
    """One fused group as a loop nest. `nodes` are the IR nodes it computes; `errors` the
    (exception name, message) pairs its Check statements raise; `scratch_bytes` the
    group-private memory its scratch slots need."""

    name: str
    kind: str
    nodes: tuple
    slots: list
    body: list
    errors: list = field(default_factory=list)
    scratch_bytes: int = 0

    def describe(self):
        lines = [f"kernel {self.name} ({self.kind}) nodes {' '.join(f'%{n}' for n in self.nodes)}"]
        for i, s in enumerate(self.slots):
            key = f"%{s.key}" if isinstance(s.key, int) else "scratch" + str(s.key[1:])
            lines.append(f"  s{i} = {key} {s.dtype}[{s.size}]{' (written)' if s.writes else ''}")
        lines.extend(describe_statements(self.body, "  "))
        return "\n".join(lines)


def describe_statements(body, indent):
    lines = []
    for stmt in body:
        if isinstance(stmt, Loop):
            par = " parallel" if stmt.parallel else ""
            lines.append(f"{indent}for {stmt.name} in 0..{stmt.extent}{par}:")
            lines.extend(describe_statements(stmt.body, indent + "  "))
        elif isinstance(stmt, Declare):
            lines.append(f"{indent}{stmt.name} = {stmt.init.text}")
        elif isinstance(stmt, Update):
            extra = f" at {stmt.position.text} -> {stmt.index_name}" if stmt.position is not None else ""
            lines.append(f"{indent}{stmt.name} = {stmt.combine}({stmt.name}, {stmt.value.text}){extra}")
        elif isinstance(stmt, Store):
            op = "+=" if stmt.combine == "add" else "="
            lines.append(f"{indent}s{stmt.slot}[{stmt.offset.text}] {op} {stmt.value.text}")
        elif isinstance(stmt, Check):
            lines.append(f"{indent}check {stmt.cond.text} else error {stmt.error}")
        elif isinstance(stmt, Gemm):
            a, b, c = stmt.a, stmt.b, stmt.c
            lines.append(f"{indent}sgemm {stmt.m}x{stmt.n}x{stmt.k}: s{c.slot}[{c.offset.text}; {c.rows},{c.cols}] = "
                         f"s{a.slot}[{a.offset.text}; {a.rows},{a.cols}] @ s{b.slot}[{b.offset.text}; {b.rows},{b.cols}]"
                         + (f" + {stmt.beta}*c" if stmt.beta else ""))
        elif isinstance(stmt, ConvCall):
            lines.append(f"{indent}{stmt.kind}: s{stmt.out} = {stmt.kind}(s{stmt.in0}, s{stmt.in1}) "
                         f"geometry {stmt.geometry}, workspace s{stmt.workspace} x{stmt.workspace_slots}")
        elif isinstance(stmt, Callback):
            lines.append(f"{indent}host-only {stmt.op}: numpy callback for %{stmt.node}")
    return lines


def walk_statements(body):
    for stmt in body:
        yield stmt
        if isinstance(stmt, Loop):
            yield from walk_statements(stmt.body)


def statement_exprs(stmt):
    """The expressions a statement reads (not those of nested statements)."""
    if isinstance(stmt, Declare):
        return [stmt.init]
    if isinstance(stmt, Update):
        return [stmt.value] + ([stmt.position] if stmt.position is not None else [])
    if isinstance(stmt, Store):
        return [stmt.offset, stmt.value]
    if isinstance(stmt, Check):
        return [stmt.cond]
    if isinstance(stmt, Gemm):
        return [stmt.a.offset, stmt.b.offset, stmt.c.offset]
    return []
