"""Scalar expressions of loop kernels (compiler/loop_ir.py Exprs) as LLVM IR.

`ScalarEmitter.emit(expr)` writes the instructions computing one Expr at the builder's
position, reusing values already computed in the same or an enclosing loop body. It compiles
the loop IR's core ops (loop_ir.CORE_OPS: arithmetic, comparisons, C's truncating division,
integer pow); each primitive's own expression in those terms is its lowering rule in ember/ops
(relu, sign, floor division with Python's signs...). Semantics follow numpy's: NaN-propagating
maximum/minimum, round half to even, bool stored as one byte.
The target's tables say how a float math function (loop_ir.MATH_FUNCTIONS) is computed: `math_functions` (op -> emitter writing
it inline; by default the polynomials of compiler/llvm/math.py, no calls, so the loops holding
them vectorise) and `float_intrinsics` (op -> LLVM intrinsic). Index arithmetic is int64. No
fast-math flags: results are IEEE-exact except inside the polynomial approximations.
"""
import math
import struct

from llvmlite import ir

from .target import LLVMTarget
from . import math as llvm_math

F32, F64, I1, I8, I32, I64 = ir.FloatType(), ir.DoubleType(), ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F16, I16 = ir.HalfType(), ir.IntType(16)
# float16 and bfloat16 are stored as they are and computed in float32, as PyTorch's CPU does
# (inside a fused kernel they round once, at the store); bfloat16 is stored as its 16 bits
VALUE_TYPES = {"float32": F32, "float64": F64, "float16": F32, "bfloat16": F32, "int8": I8, "uint8": I8,
               "int16": I16, "int32": I32, "int64": I64, "bool": I1}
STORAGE_TYPES = {"float32": F32, "float64": F64, "float16": F16, "bfloat16": I16, "int8": I8, "uint8": I8,
                 "int16": I16, "int32": I32, "int64": I64, "bool": I8}
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
UNSIGNED = ("uint8", "bool")  # compared, divided and widened without sign
POLYNOMIAL = llvm_math.EMITTERS  # the default math table
FLOAT_INTRINSICS = LLVMTarget.float_intrinsics  # the default intrinsic table
FCMP = {"eq": ("==", True), "ne": ("!=", False), "lt": ("<", True), "le": ("<=", True),
        "gt": (">", True), "ge": (">=", True)}
ICMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def is_float(dtype):
    return dtype in FLOAT_DTYPES


def round_constant(dtype, value):
    """A Python float as the nearest value of a 2-byte float dtype (unchanged for others)."""
    if dtype == "float16":
        return float(struct.unpack("<e", struct.pack("<e", value))[0]) if abs(value) < 65520 or value != value \
            else math.copysign(math.inf, value)
    if dtype == "bfloat16":
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        if value == value:
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return struct.unpack("<f", struct.pack("<I", bits & 0xFFFF0000 | (0x400000 if value != value else 0)))[0]
    return value


def intrinsic(module, name, value_type, arity=1):
    """The overloaded LLVM intrinsic `name` for `value_type`, declared once per module."""
    suffix = "f32" if value_type == F32 else "f64" if value_type == F64 else f"i{value_type.width}"
    full = f"{name}.{suffix}"
    existing = module.globals.get(full)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(value_type, [value_type] * arity), name=full)


MAX_SYMBOLS = 16  # size symbols a dynamic program may have (s0 .. s15)


def symbol_number(symbol):
    number = int(symbol[1:])
    if number >= MAX_SYMBOLS:
        raise ValueError(f"a dynamic program takes at most {MAX_SYMBOLS} size symbols, not {symbol}")
    return number


def sizes_global(module):
    """`@ember_sizes`: the running program's size symbols, s0 .. s15, as int64."""
    existing = module.globals.get("ember_sizes")
    if existing is not None:
        return existing
    variable = ir.GlobalVariable(module, ir.ArrayType(I64, MAX_SYMBOLS), name="ember_sizes")
    variable.linkage = "internal"
    variable.initializer = ir.Constant(ir.ArrayType(I64, MAX_SYMBOLS), None)
    return variable


def const_value(dtype, value):
    if dtype == "bool":
        return ir.Constant(I1, int(bool(value)))
    return ir.Constant(VALUE_TYPES[dtype], round_constant(dtype, value) if is_float(dtype) else value)


def load_value(builder, pointer, dtype, offset):
    """Element `offset` of a buffer of `dtype` (bool as a byte, turned into i1)."""
    address = builder.gep(pointer, [offset], source_etype=STORAGE_TYPES[dtype])
    value = builder.load(address, typ=STORAGE_TYPES[dtype])
    if dtype == "bool":
        return builder.icmp_unsigned("!=", value, ir.Constant(I8, 0))
    if dtype == "float16":
        return builder.fpext(value, F32)
    if dtype == "bfloat16":
        return builder.bitcast(builder.shl(builder.zext(value, I32), ir.Constant(I32, 16)), F32)
    return value


def store_value(builder, pointer, dtype, offset, value):
    address = builder.gep(pointer, [offset], source_etype=STORAGE_TYPES[dtype])
    if dtype == "bool":
        value = builder.zext(value, I8)
    elif dtype == "float16":
        value = builder.fptrunc(value, F16)
    elif dtype == "bfloat16":
        value = bfloat16_bits(builder, value)
    builder.store(value, address)
    return address


def bfloat16_bits(builder, value):
    """The bfloat16 nearest a float32 value (ties to even; NaN stays a quiet NaN), as i16."""
    bits = builder.bitcast(value, I32)
    lowest_kept = builder.and_(builder.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
    rounded = builder.add(bits, builder.add(ir.Constant(I32, 0x7FFF), lowest_kept))
    quiet_nan = builder.or_(bits, ir.Constant(I32, 0x400000))
    chosen = builder.select(builder.fcmp_unordered("uno", value, value), quiet_nan, rounded)
    return builder.trunc(builder.lshr(chosen, ir.Constant(I32, 16)), I16)


def round_to(builder, value, dtype):
    """A float32 value rounded to a 2-byte float dtype and widened back (a cast's rounding)."""
    if dtype == "float16":
        return builder.fpext(builder.fptrunc(value, F16), F32)
    bits = builder.zext(bfloat16_bits(builder, value), I32)
    return builder.bitcast(builder.shl(bits, ir.Constant(I32, 16)), F32)


def convert(builder, value, source, target):
    """Cast an LLVM value of dtype `source` to dtype `target` (numpy's astype)."""
    if source == target:
        return value
    to_type = VALUE_TYPES[target]
    if target == "bool":
        if is_float(source):
            return builder.fcmp_unordered("!=", value, ir.Constant(value.type, 0.0))
        return builder.icmp_unsigned("!=", value, ir.Constant(value.type, 0))
    if is_float(target):
        if is_float(source):
            if target in ("float16", "bfloat16"):  # as PyTorch: float64 through float32 (two roundings)
                value = builder.fptrunc(value, F32) if source == "float64" else value
                return round_to(builder, value, target)
            if value.type == to_type:
                return value
            return builder.fpext(value, to_type) if target == "float64" else builder.fptrunc(value, to_type)
        widened = builder.uitofp(value, to_type) if source in UNSIGNED else builder.sitofp(value, to_type)
        return round_to(builder, widened, target) if target in ("float16", "bfloat16") else widened
    if is_float(source):
        if to_type.width < 32:  # through int32 and wrapped, as numpy's casts do on x86
            return builder.trunc(builder.fptosi(value, I32), to_type)
        return builder.fptosi(value, to_type)
    if to_type.width > value.type.width:
        return builder.zext(value, to_type) if source in UNSIGNED else builder.sext(value, to_type)
    if to_type.width == value.type.width:
        return value
    return builder.trunc(value, to_type)


class ScalarEmitter:
    """Emits Exprs with a builder. `slots` maps slot numbers to buffer pointers, `names` maps
    loop-variable names to their values, `accumulators` accumulator names to allocas;
    `math_functions` and `float_intrinsics` are the target's tables (see module docstring)."""

    def __init__(self, builder, module, slots, names, accumulators, dtypes_of_accumulators, math_functions=None,
                 float_intrinsics=None):
        self.builder, self.module = builder, module
        self.math_functions = POLYNOMIAL if math_functions is None else math_functions
        self.float_intrinsics = FLOAT_INTRINSICS if float_intrinsics is None else float_intrinsics
        self.slots, self.names = slots, names
        self.accumulators, self.acc_dtypes = accumulators, dtypes_of_accumulators
        self.scopes = [{}]  # one cache per open loop body; inner bodies see outer values
        self.sizes = {}  # size symbol -> its value, loaded in the function's entry block

    def push(self):
        self.scopes.append({})

    def pop(self):
        self.scopes.pop()

    def forget_accumulator(self, name):
        """An accumulator changed: values read from it earlier are stale."""
        for cache in self.scopes:
            for key in [k for k in cache if k.op == "acc" and k.attr == name]:
                del cache[key]

    def forget_loads(self):
        """A store happened (or, on a GPU, a barrier): later loads, and values computed from
        them, must read memory again."""
        for cache in self.scopes:
            for key in [k for k in cache if k.op == "load" or (k.args and any(e.op == "load" for e in k.walk()))]:
                del cache[key]

    def emit(self, expr):
        for cache in reversed(self.scopes):
            if expr in cache:
                return cache[expr]
        value = self._emit(expr)
        if expr.op != "acc":  # accumulators change inside loops: read them afresh
            self.scopes[-1][expr] = value
        return value

    # ------------------------------------------------------------------ leaves and index math
    def _emit(self, e):
        b = self.builder
        if e.op == "const":
            return const_value(e.dtype, e.attr)
        if e.op == "var":
            return self.names[e.attr[0]]
        if e.op == "acc":
            return b.load(self.accumulators[e.attr], typ=VALUE_TYPES[self.acc_dtypes[e.attr]])
        if e.op == "load":
            return load_value(b, self.slots[e.attr], e.dtype, self.emit(e.args[0]))
        if e.op == "affine":
            coefs, constant = e.attr
            total = None
            for atom, c in zip(e.args, coefs):
                term = self.emit(atom)
                if c != 1:
                    term = b.mul(term, ir.Constant(I64, c))
                total = term if total is None else b.add(total, term)
            return b.add(total, ir.Constant(I64, constant)) if constant else total
        if e.op in ("floordiv", "mod"):
            return self._index_div(e)
        if e.op == "size":
            return self._size(e.attr)
        if e.op == "imul":
            return b.mul(self.emit(e.args[0]), self.emit(e.args[1]))
        if e.op in ("floordiv_by", "mod_by"):  # (x >= 0 and a size >= 1 in every use lowering makes)
            x, d = self.emit(e.args[0]), self.emit(e.args[1])
            return b.sdiv(x, d) if e.op == "floordiv_by" else b.srem(x, d)
        if e.op == "cast":
            return convert(b, self.emit(e.args[0]), e.args[0].dtype, e.dtype)
        if e.op == "select":
            cond, x, y = (self.emit(a) for a in e.args)
            return b.select(cond, x, y)
        args = [self.emit(a) for a in e.args]
        operand = e.args[0].dtype
        if e.op in FCMP or e.op in ICMP:
            return self._compare(e.op, operand, *args)
        if e.op.startswith("logical_"):
            return self._logical(e.op, *args)
        if is_float(operand):
            return self._float_op(e.op, e.dtype, args)
        return self._int_op(e.op, e.dtype, args)

    def _size(self, symbol):
        """A size symbol's value: loaded once per function, in its entry block, from the
        module's `ember_sizes` array (the program's entry fills it: compiler/cpu/program.py)."""
        cache = self.sizes
        key = symbol
        if key not in cache:
            b = self.builder
            saved = b.block
            entry = b.function.entry_basic_block
            if entry.instructions:
                b.position_before(entry.instructions[0])
            else:
                b.position_at_end(entry)
            sizes = sizes_global(self.module)
            cell = b.gep(sizes, [ir.Constant(I64, 0), ir.Constant(I64, symbol_number(symbol))])
            cache[key] = b.load(cell, name=symbol)
            b.position_at_end(saved)
        return cache[key]

    def _index_div(self, e):
        b = self.builder
        x = self.emit(e.args[0])
        c = ir.Constant(I64, e.attr)
        if e.args[0].lo is not None and e.args[0].lo >= 0:
            return b.udiv(x, c) if e.op == "floordiv" else b.urem(x, c)
        q, r = b.sdiv(x, c), b.srem(x, c)
        negative = b.icmp_signed("<", r, ir.Constant(I64, 0))
        if e.op == "floordiv":
            return b.sub(q, b.zext(negative, I64))
        return b.select(negative, b.add(r, c), r)

    def _compare(self, op, dtype, x, y):
        b = self.builder
        if is_float(dtype):
            symbol, ordered = FCMP[op]
            return b.fcmp_ordered(symbol, x, y) if ordered else b.fcmp_unordered(symbol, x, y)
        if dtype in UNSIGNED:
            return b.icmp_unsigned(ICMP[op], x, y)
        return b.icmp_signed(ICMP[op], x, y)

    def _logical(self, op, *args):
        b = self.builder
        if op == "logical_not":
            return b.xor(args[0], ir.Constant(I1, 1))
        return {"logical_and": b.and_, "logical_or": b.or_, "logical_xor": b.xor}[op](*args)

    # ------------------------------------------------------------------ float ops
    def _float_op(self, op, dtype, args):
        b = self.builder
        if op in self.math_functions:
            return self.math_functions[op](b, args[0])
        if op == "add":
            return b.fadd(*args)
        if op == "sub":
            return b.fsub(*args)
        if op == "mul":
            return b.fmul(*args)
        if op == "div":
            return b.fdiv(*args)
        if op == "neg":
            return b.fneg(args[0])
        if op == "trunc_rem":
            return b.frem(*args)
        if op in self.float_intrinsics:
            return b.call(self.float_intrinsic(op, VALUE_TYPES[dtype], len(args)), args)
        raise NotImplementedError(f"llvm: no float lowering for {op} on this target")

    def float_intrinsic(self, op, value_type, arity=1):
        """The target's intrinsic for float op `op` (its `float_intrinsics` table)."""
        if op not in self.float_intrinsics:
            raise NotImplementedError(f"llvm: no float lowering for {op} on this target")
        return intrinsic(self.module, self.float_intrinsics[op], value_type, arity)

    # ------------------------------------------------------------------ int ops
    def _int_op(self, op, dtype, args):
        b = self.builder
        t = VALUE_TYPES[dtype]
        if op == "add":
            return b.add(*args)
        if op == "sub":
            return b.sub(*args)
        if op == "mul":
            return b.mul(*args)
        if op == "neg":
            return b.sub(ir.Constant(t, 0), args[0])
        if op in ("maximum", "minimum"):
            if dtype == "bool":
                return b.or_(*args) if op == "maximum" else b.and_(*args)
            compare = b.icmp_unsigned if dtype in UNSIGNED else b.icmp_signed
            return b.select(compare(">" if op == "maximum" else "<", *args), *args)
        if op == "trunc_div":
            return b.udiv(*args) if dtype in UNSIGNED else b.sdiv(*args)
        if op == "trunc_rem":
            return b.urem(*args) if dtype in UNSIGNED else b.srem(*args)
        if op == "pow":
            return b.call(self._int_pow(t), args)
        if op == "bitwise_xor":
            return b.xor(*args)
        if op == "shift_right_logical":
            return b.lshr(*args)
        raise NotImplementedError(f"llvm: no integer lowering for {op}")

    def _int_pow(self, t):
        """An internal function: x ** y by squaring (y < 0: 0 but for bases 1 and -1, as PyTorch)."""
        name = f"ember_ipow_i{t.width}"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ir.FunctionType(t, [t, t]), name=name)
        fn.linkage = "internal"
        entry, loop, done = fn.append_basic_block("entry"), fn.append_basic_block("loop"), fn.append_basic_block("done")
        b = ir.IRBuilder(entry)
        base, exponent = fn.args
        b.branch(loop)
        b.position_at_end(loop)
        result = b.phi(t)
        power = b.phi(t)
        rest = b.phi(t)
        result.add_incoming(ir.Constant(t, 1), entry)
        power.add_incoming(base, entry)
        rest.add_incoming(exponent, entry)
        odd = b.trunc(rest, I1)
        new_result = b.select(odd, b.mul(result, power), result)
        new_power = b.mul(power, power)
        new_rest = b.lshr(rest, ir.Constant(t, 1))
        result.add_incoming(new_result, loop)
        power.add_incoming(new_power, loop)
        rest.add_incoming(new_rest, loop)
        b.cbranch(b.icmp_signed(">", new_rest, ir.Constant(t, 0)), loop, done)
        b.position_at_end(done)
        negative = b.icmp_signed("<", exponent, ir.Constant(t, 0))
        zero_exponent = b.icmp_signed("==", exponent, ir.Constant(t, 0))
        value = b.select(zero_exponent, ir.Constant(t, 1), new_result)
        # a negative exponent, as PyTorch: 1 for base 1, +-1 for base -1 (by the exponent's parity), else 0
        odd_exponent = b.trunc(exponent, I1)
        minus_one = b.select(odd_exponent, ir.Constant(t, -1), ir.Constant(t, 1))
        small = b.select(b.icmp_signed("==", base, ir.Constant(t, 1)), ir.Constant(t, 1),
                         b.select(b.icmp_signed("==", base, ir.Constant(t, -1)), minus_one, ir.Constant(t, 0)))
        b.ret(b.select(negative, small, value))
        return fn
