"""Small llvmlite IR-building helpers every LLVM target shares: counted loops, vector splats,
typed constants, declarations once per module, entry-block allocas.

The hand-written CPU kernels (compiler/cpu/sgemm.py, conv.py) are built from them; so may
any target's generated kernels. Nothing here depends on the machine the code is for.
"""
from contextlib import contextmanager

from llvmlite import ir

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
VOID = ir.VoidType()
F32_PTR = F32.as_pointer()
I8_PTR = I8.as_pointer()


def i64(value):
    return ir.Constant(I64, value)


def i32(value):
    return ir.Constant(I32, value)


def f32(value):
    return ir.Constant(F32, value)


@contextmanager
def counted_loop(builder, start, stop, step=1, name="i"):
    """`for (i = start; i < stop; i += step)` over i64; yields i with the builder in the body
    and leaves the builder after the loop."""
    start = i64(start) if isinstance(start, int) else start
    stop = i64(stop) if isinstance(stop, int) else stop
    step = i64(step) if isinstance(step, int) else step
    before = builder.block
    header = builder.append_basic_block(f"{name}.head")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(header)
    builder.position_at_end(header)
    index = builder.phi(I64, name=name)
    index.add_incoming(start, before)
    builder.cbranch(builder.icmp_signed("<", index, stop), body, done)
    builder.position_at_end(body)
    yield index
    following = builder.add(index, step, name=f"{name}.next")
    index.add_incoming(following, builder.block)
    builder.branch(header)
    builder.position_at_end(done)


def splat(builder, scalar, lanes):
    """<lanes x T> with every lane = scalar (a broadcast)."""
    vector_type = ir.VectorType(scalar.type, lanes)
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar, i32(0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))


def smin(builder, a, b):
    return builder.select(builder.icmp_signed("<", a, b), a, b)


def smax(builder, a, b):
    return builder.select(builder.icmp_signed(">", a, b), a, b)


def ceil_div(builder, a, b):
    return builder.sdiv(builder.add(a, builder.sub(b, i64(1))), b)


def declare(module, name, return_type, argument_types):
    """The function `name` of the module, declared with this type if it is not there yet."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(return_type, argument_types), name=name)


def entry_alloca(builder, element_type, count, align=64, name=""):
    """An alloca in the function's entry block (so LLVM sees a fixed frame slot)."""
    function = builder.function
    entry = function.entry_basic_block
    saved = builder.block
    if entry.instructions:
        builder.position_before(entry.instructions[0])
    else:
        builder.position_at_end(entry)
    slot = builder.alloca(element_type, size=i64(count) if isinstance(count, int) else count, name=name)
    slot.align = align
    builder.position_at_end(saved)
    return slot

