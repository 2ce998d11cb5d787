"""PTX entries for the launches of a lowered kernel (launches.py), written with compiler/llvm's
shared kernel and statement writers.

Each launch is `define ptx_kernel void @entry(ptr slots..., ptr status)` over all of its
kernel's slots (global memory; NVPTX's argument lowering turns the generic kernel pointers
into global ones), with `.maxntid` BLOCK_THREADS. A "grid" launch runs its parallel loop
as a grid-stride loop: thread (block index x block size + thread index) takes iterations
i, i + grid size, ...; a "rows" launch runs it block-stride (block b takes rows b, b +
blocks, ...) with each row's statements shared by the block's threads, a "block" launch
its statements so (block_statements.py); a "tiles" launch is a contraction tiled through shared memory (tiled_matmul.py); a "thread"
launch runs them on the grid's first thread.
Failed checks keep the least error number, counted from 1 within the kernel, in the status
cell the launch is given (one per launch: kernels of one structure share their entries,
target.py, so the runner adds the kernel's first error number).
"""
from llvmlite import ir

from ..llvm import kernels
from ..llvm.loops import I32, I64, counted_loop, declare
from .block_statements import write_shared_body
from .split_reductions import SplitWriter
from .tiled_matmul import matmul_nest, write_tiles
from .launches import BLOCK_THREADS

SPECIAL_REGISTER = "llvm.nvvm.read.ptx.sreg.{}.x"  # tid, ctaid, ntid, nctaid


class _KernelAttributes(ir.values.FunctionAttributes):
    """Function attributes that also accept NVPTX's `"nvvm.maxntid"` string attribute."""

    _known = ir.values.FunctionAttributes._known | {f'"nvvm.maxntid"="{BLOCK_THREADS}"'}


def special_register(builder, name):
    """The x component of a PTX special register (`tid`, `ctaid`, `ntid`, `nctaid`) as i64."""
    function = declare(builder.module, SPECIAL_REGISTER.format(name), I32, [])
    return builder.zext(builder.call(function, []), I64, name=name)


class PtxKernelWriter(kernels.KernelWriter):
    """Writes one Launch of the kernel as a `ptx_kernel` entry."""

    def __init__(self, target, module, program, kernel, number, launch):
        super().__init__(target, module, program, kernel, number)
        self.launch = launch
        self.symbol = launch.entry

    def extra_arguments(self):
        """A split reduction's launches take the partial-values buffer after the status cell."""
        return [kernels.PTR] if self.launch.partial_bytes else []

    def error_offset(self, program, number):
        return 0  # errors are numbered per kernel: entries are shared (the runner adds the base)

    def new_function(self, name, function_type):
        fn = super().new_function(name, function_type)
        fn.calling_convention = "ptx_kernel"
        fn.attributes = _KernelAttributes()
        fn.attributes.add(f'"nvvm.maxntid"="{BLOCK_THREADS}"')
        fn.attributes.add("nounwind")
        return fn

    def write_body(self, body):
        """The launch's statements as its mode says (launches.py): over the grid, a block per
        row, one block, or guarded to the grid's first thread."""
        mode, b = self.launch.mode, body.builder
        if mode == "grid":
            body.statements(self.launch.statements, top=True)
            return
        if mode in ("tiles", "tiles_split", "tiles_sum"):
            (nest_loop,) = self.launch.statements
            write_tiles(body, matmul_nest(nest_loop), special_register(b, "tid"), special_register(b, "ctaid"),
                        special_register(b, "nctaid"), special_register(b, "ntid"),
                        body.extra[0] if self.launch.partial_bytes else None, mode, self.launch.tf32)
            return
        if mode in ("partials", "finish"):
            writer = SplitWriter(body, special_register(b, "tid"), special_register(b, "ntid"),
                                 special_register(b, "ctaid"), special_register(b, "nctaid"), body.extra[0],
                                 self.launch.statements)
            writer.write_partials() if mode == "partials" else writer.write_finish()
            return
        if mode in ("rows", "block"):
            tid, ntid = special_register(b, "tid"), special_register(b, "ntid")
            if mode == "block":
                write_shared_body(body, self.launch.statements, tid, ntid)
                return
            (rows,) = self.launch.statements
            with counted_loop(b, special_register(b, "ctaid"), ir.Constant(I64, rows.extent),
                              special_register(b, "nctaid"), name=rows.name) as row:
                body.emitter.names[rows.name] = row
                body.emitter.push()
                write_shared_body(body, rows.body, tid, ntid)
                body.emitter.pop()
            return
        first = b.icmp_unsigned("==", b.or_(special_register(b, "tid"), special_register(b, "ctaid")),
                                ir.Constant(I64, 0))
        with b.if_then(first):
            body.statements(self.launch.statements)


class PtxBodyWriter(kernels.BodyWriter):
    """Statements on the GPU: the launch's top-level parallel loop spreads over the grid."""

    def check(self, stmt):
        """A failed check keeps the smallest error number of the launch in its status cell
        (atomic unsigned min; the runner fills the cell with NO_ERROR): whichever thread fails
        first, the launch reports the check that comes first in the program."""
        b = self.builder
        code = self.writer.first_error + stmt.error + 1
        with b.if_then(b.not_(self.emitter.emit(stmt.cond)), likely=False):
            b.atomic_rmw("umin", self.status, ir.Constant(I32, code), "monotonic")

    def distributes(self, loop):
        return self.writer.launch.mode == "grid" and loop.parallel

    def parallel_loop(self, stmt):
        """for var = global thread index; var < extent; var += grid size: body."""
        b = self.builder
        block, block_size = special_register(b, "ctaid"), special_register(b, "ntid")
        start = b.add(b.mul(block, block_size), special_register(b, "tid"), name=f"{stmt.name}.first")
        stride = b.mul(special_register(b, "nctaid"), block_size, name=f"{stmt.name}.stride")
        with counted_loop(b, start, ir.Constant(I64, stmt.extent), stride, name=stmt.name) as index:
            self.emitter.names[stmt.name] = index
            self.emitter.push()
            self.statements(stmt.body)
            self.emitter.pop()


PtxKernelWriter.body_writer = PtxBodyWriter


def write_launches(target, module, program, launches):
    """The entry of every launch that writes one into `module`; returns the llvmlite functions."""
    return [PtxKernelWriter(target, module, program, launch.merged or program.kernels[launch.kernel], launch.kernel,
                            launch).write()
            for launch in launches if launch.writes_entry]
