"""A GPU grid emulated on this CPU: the PTX target's own LLVM module, retargeted to the host
and run block by block, each block's threads as real threads. What tests (and
`ember.cuda`'s emulated device) use to check the GPU code's indexing, barriers, shared
memory and warp shuffles with real numbers, no GPU needed.

The module is the one compiler/ptx emits for nvptx64 (before LLVM optimises it), changed
only where the host has no such thing:
- the special registers (`llvm.nvvm.read.ptx.sreg.{tid,ntid,ctaid,nctaid}.x`) read this
  thread's context, found with `pthread_getspecific` (each emulated thread sets its own);
- `bar.sync` (`llvm.nvvm.barrier0`) waits on a barrier of the block's threads (a pthread
  mutex and condition; a thread that has returned from the kernel counts as arrived, as on
  a GPU, so threads that wait unequally give wrong numbers rather than a hang);
- `shfl.sync.bfly` exchanges values through a per-block array, between two waits on a
  barrier of the warp's 32 threads (so every lane of a warp must take part, as on a GPU);
- the TF32 tensor-core product `mma.sync.m16n8k8` (`llvm.nvvm.mma.m16n8k8.row.col.tf32`)
  likewise: each lane puts its A and B registers in the array, waits for its warp, and sums
  the products for its own four outputs from the lanes the PTX fragment layout names;
- shared memory (`addrspace(3)`) becomes ordinary globals: blocks run one after another,
  so one copy serves each block in turn.
A launch whose entry neither waits nor shuffles runs its threads one after another on the
calling thread (a loop compiled beside the entry: fast); the others run a block's GPU threads
as fibers on the calling thread (runtime/grid_fibers.c, built with the C compiler on first
use: the emulated pthread calls resolve to it, and a wait hands the turn to the next fiber),
blocks in order; without a C compiler, as real threads (a thread per GPU thread: correct,
but a barrier wakes hundreds of threads).
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading

SPECIAL_REGISTERS = ("tid", "ntid", "ctaid", "nctaid")  # the context's first four i32 fields
# a barrier: a pthread mutex (40 bytes) at 0, a condition (48 bytes) at 64, then i32 count,
# arrived, exited and generation at 128..140; threads that left the kernel count as arrived,
# as on a GPU, so a kernel whose threads wait unequally gives wrong numbers, not a hang
BARRIER_BYTES, CONDITION_AT, COUNT_AT = 192, 64, 128
WARP = 32
MMA_CELLS = 6  # i32 cells per thread in the exchange array: a tensor-core product's 4 + 2 operand registers
_LIBC = ctypes.CDLL(None, use_errno=True)
_KEY = ctypes.c_uint(0)
if _LIBC.pthread_key_create(ctypes.byref(_KEY), None) != 0:  # pragma: no cover
    raise OSError("ember grid emulator: pthread_key_create failed")
_LIBC_CALLS = ("pthread_getspecific", "pthread_mutex_lock", "pthread_mutex_unlock", "pthread_cond_wait",
               "pthread_cond_broadcast")
_FIBER_CALLS = {"pthread_getspecific": "ember_grid_context", "pthread_mutex_lock": "ember_grid_nothing",
                "pthread_mutex_unlock": "ember_grid_nothing", "pthread_cond_wait": "ember_grid_yield",
                "pthread_cond_broadcast": "ember_grid_nothing"}
FIBER_STACK_BYTES = 256 * 1024


def _build_fibers():
    """runtime/grid_fibers.c as a loaded library, built once into the compile cache folder (or
    the temporary folder); None where no C compiler or loader cooperates (threads then)."""
    from ember import config
    source_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grid_fibers.c")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or config.GRID_THREADS:
        return None
    with open(source_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    for folder in (config.CACHE_DIR, tempfile.gettempdir()):
        path = os.path.join(folder, f"grid_fibers-{digest}.so")
        try:
            if not os.path.exists(path):
                os.makedirs(folder, exist_ok=True)
                handle, partial = tempfile.mkstemp(prefix=".grid_fibers-", suffix=".so", dir=folder)
                os.close(handle)
                subprocess.run([compiler, "-shared", "-fPIC", "-O2", source_path, "-o", partial], check=True,
                               capture_output=True)
                os.replace(partial, path)  # (atomic: another process may be building it too)
            return ctypes.CDLL(path)
        except (OSError, subprocess.CalledProcessError):
            continue
    return None


_FIBERS = _build_fibers()

_CONTEXT_IR = r'''
@"grid.key" = global i32 0
declare ptr @pthread_getspecific(i32)
declare i32 @pthread_mutex_lock(ptr)
declare i32 @pthread_mutex_unlock(ptr)
declare i32 @pthread_cond_wait(ptr, ptr)
declare i32 @pthread_cond_broadcast(ptr)
define internal ptr @"grid.context"() {
  %key = load i32, ptr @"grid.key"
  %context = call ptr @pthread_getspecific(i32 %key)
  ret ptr %context
}
define internal void @"grid.sync"(ptr %barrier, i1 %leaving) {
entry:
  %condition = getelementptr i8, ptr %barrier, i64 CONDITION_AT
  %count_at = getelementptr i8, ptr %barrier, i64 COUNT_AT
  %arrived_at = getelementptr i32, ptr %count_at, i64 1
  %exited_at = getelementptr i32, ptr %count_at, i64 2
  %generation_at = getelementptr i32, ptr %count_at, i64 3
  %locked = call i32 @pthread_mutex_lock(ptr %barrier)
  %generation = load i32, ptr %generation_at
  %counter = select i1 %leaving, ptr %exited_at, ptr %arrived_at
  %before = load i32, ptr %counter
  %after = add i32 %before, 1
  store i32 %after, ptr %counter
  %arrived = load i32, ptr %arrived_at
  %exited = load i32, ptr %exited_at
  %count = load i32, ptr %count_at
  %present = add i32 %arrived, %exited
  %full = icmp eq i32 %present, %count
  %waiting = icmp ne i32 %arrived, 0
  %release = and i1 %full, %waiting
  br i1 %release, label %open, label %decide
open:
  store i32 0, ptr %arrived_at
  %next = add i32 %generation, 1
  store i32 %next, ptr %generation_at
  %woken = call i32 @pthread_cond_broadcast(ptr %condition)
  br label %done
decide:
  br i1 %leaving, label %done, label %wait
wait:
  %waited = call i32 @pthread_cond_wait(ptr %condition, ptr %barrier)
  %now = load i32, ptr %generation_at
  %same = icmp eq i32 %now, %generation
  br i1 %same, label %wait, label %done
done:
  %unlocked = call i32 @pthread_mutex_unlock(ptr %barrier)
  ret void
}
define internal void @"grid.wait"(i64 %field, i64 %number, i1 %leaving) {
  %context = call ptr @"grid.context"()
  %at = getelementptr i8, ptr %context, i64 %field
  %barriers = load ptr, ptr %at
  %offset = mul i64 %number, BARRIER_BYTES
  %barrier = getelementptr i8, ptr %barriers, i64 %offset
  call void @"grid.sync"(ptr %barrier, i1 %leaving)
  ret void
}
define internal void @"grid.barrier"() {
  call void @"grid.wait"(i64 16, i64 0, i1 false)
  ret void
}
define void @"grid.leave"() {
  %context = call ptr @"grid.context"()
  %tid = load i32, ptr %context
  %warp = udiv i32 %tid, 32
  %warp64 = zext i32 %warp to i64
  call void @"grid.wait"(i64 16, i64 0, i1 true)
  call void @"grid.wait"(i64 24, i64 %warp64, i1 true)
  ret void
}
define internal void @"grid.clear"(ptr %barrier) {
  %count_at = getelementptr i8, ptr %barrier, i64 COUNT_AT
  %arrived_at = getelementptr i32, ptr %count_at, i64 1
  %exited_at = getelementptr i32, ptr %count_at, i64 2
  store i32 0, ptr %arrived_at
  store i32 0, ptr %exited_at
  ret void
}
define internal void @"grid.reset"() {
entry:
  %context = call ptr @"grid.context"()
  %ntid_at = getelementptr i32, ptr %context, i64 1
  %ntid = load i32, ptr %ntid_at
  %warps = udiv i32 %ntid, 32
  %block_at = getelementptr i8, ptr %context, i64 16
  %block_barrier = load ptr, ptr %block_at
  call void @"grid.clear"(ptr %block_barrier)
  %warps_at = getelementptr i8, ptr %context, i64 24
  %warp_barriers = load ptr, ptr %warps_at
  br label %loop
loop:
  %warp = phi i32 [0, %entry], [%next, %loop]
  %warp64 = zext i32 %warp to i64
  %offset = mul i64 %warp64, BARRIER_BYTES
  %barrier = getelementptr i8, ptr %warp_barriers, i64 %offset
  call void @"grid.clear"(ptr %barrier)
  %next = add i32 %warp, 1
  %more = icmp ult i32 %next, %warps
  br i1 %more, label %loop, label %done
done:
  ret void
}
define internal void @"grid.next_block"() {
entry:
  call void @"grid.wait"(i64 40, i64 0, i1 false)
  %context = call ptr @"grid.context"()
  %tid = load i32, ptr %context
  %first = icmp eq i32 %tid, 0
  br i1 %first, label %reset, label %after
reset:
  call void @"grid.reset"()
  br label %after
after:
  call void @"grid.wait"(i64 40, i64 1, i1 false)
  ret void
}
define internal i32 @"grid.shfl.bfly"(i32 %mask, i32 %value, i32 %lanes, i32 %clamp) {
  %context = call ptr @"grid.context"()
  %tid = load i32, ptr %context
  %at = getelementptr i8, ptr %context, i64 32
  %exchange = load ptr, ptr %at
  %mine = getelementptr i32, ptr %exchange, i32 %tid
  store i32 %value, ptr %mine
  %warp = udiv i32 %tid, 32
  %warp64 = zext i32 %warp to i64
  call void @"grid.wait"(i64 24, i64 %warp64, i1 false)
  %lane = urem i32 %tid, 32
  %source_lane = xor i32 %lane, %lanes
  %in_range = icmp ule i32 %source_lane, %clamp
  %lane_read = select i1 %in_range, i32 %source_lane, i32 %lane
  %base = mul i32 %warp, 32
  %source = add i32 %base, %lane_read
  %theirs = getelementptr i32, ptr %exchange, i32 %source
  %got = load i32, ptr %theirs
  call void @"grid.wait"(i64 24, i64 %warp64, i1 false)
  ret i32 %got
}
define internal float @"grid.mma.element"(ptr %exchange, i32 %warp_base, i32 %row, i32 %col, float %c) {
entry:
  %row_group = urem i32 %row, 8
  %row_high = udiv i32 %row, 8
  br label %loop
loop:
  %k = phi i32 [0, %entry], [%k.next, %loop]
  %sum = phi float [%c, %entry], [%sum.next, %loop]
  %k_low = urem i32 %k, 4
  %k_high = udiv i32 %k, 4
  %a_lane.0 = mul i32 %row_group, 4
  %a_lane = add i32 %a_lane.0, %k_low
  %a_register.0 = mul i32 %k_high, 2
  %a_register = add i32 %a_register.0, %row_high
  %a_thread = add i32 %warp_base, %a_lane
  %a_cell.0 = mul i32 %a_thread, MMA_CELLS
  %a_cell = add i32 %a_cell.0, %a_register
  %a_at = getelementptr float, ptr %exchange, i32 %a_cell
  %a = load float, ptr %a_at
  %b_lane.0 = mul i32 %col, 4
  %b_lane = add i32 %b_lane.0, %k_low
  %b_register = add i32 %k_high, 4
  %b_thread = add i32 %warp_base, %b_lane
  %b_cell.0 = mul i32 %b_thread, MMA_CELLS
  %b_cell = add i32 %b_cell.0, %b_register
  %b_at = getelementptr float, ptr %exchange, i32 %b_cell
  %b = load float, ptr %b_at
  %product = fmul float %a, %b
  %sum.next = fadd float %sum, %product
  %k.next = add i32 %k, 1
  %more = icmp ult i32 %k.next, 8
  br i1 %more, label %loop, label %done
done:
  ret float %sum.next
}
define internal {float, float, float, float} @"grid.mma.tf32"(i32 %a0, i32 %a1, i32 %a2, i32 %a3, i32 %b0, i32 %b1,
                                                            float %c0, float %c1, float %c2, float %c3) {
  %context = call ptr @"grid.context"()
  %tid = load i32, ptr %context
  %at = getelementptr i8, ptr %context, i64 32
  %exchange = load ptr, ptr %at
  %mine.0 = mul i32 %tid, MMA_CELLS
  %cell0 = getelementptr i32, ptr %exchange, i32 %mine.0
  store i32 %a0, ptr %cell0
  %cell1 = getelementptr i32, ptr %cell0, i32 1
  store i32 %a1, ptr %cell1
  %cell2 = getelementptr i32, ptr %cell0, i32 2
  store i32 %a2, ptr %cell2
  %cell3 = getelementptr i32, ptr %cell0, i32 3
  store i32 %a3, ptr %cell3
  %cell4 = getelementptr i32, ptr %cell0, i32 4
  store i32 %b0, ptr %cell4
  %cell5 = getelementptr i32, ptr %cell0, i32 5
  store i32 %b1, ptr %cell5
  %warp = udiv i32 %tid, 32
  %warp64 = zext i32 %warp to i64
  call void @"grid.wait"(i64 24, i64 %warp64, i1 false)
  %lane = urem i32 %tid, 32
  %group = udiv i32 %lane, 4
  %in_group = urem i32 %lane, 4
  %warp_base = mul i32 %warp, 32
  %low_row = add i32 %group, 0
  %high_row = add i32 %group, 8
  %col.0 = mul i32 %in_group, 2
  %col.1 = add i32 %col.0, 1
  %d0 = call float @"grid.mma.element"(ptr %exchange, i32 %warp_base, i32 %low_row, i32 %col.0, float %c0)
  %d1 = call float @"grid.mma.element"(ptr %exchange, i32 %warp_base, i32 %low_row, i32 %col.1, float %c1)
  %d2 = call float @"grid.mma.element"(ptr %exchange, i32 %warp_base, i32 %high_row, i32 %col.0, float %c2)
  %d3 = call float @"grid.mma.element"(ptr %exchange, i32 %warp_base, i32 %high_row, i32 %col.1, float %c3)
  call void @"grid.wait"(i64 24, i64 %warp64, i1 false)
  %r0 = insertvalue {float, float, float, float} undef, float %d0, 0
  %r1 = insertvalue {float, float, float, float} %r0, float %d1, 1
  %r2 = insertvalue {float, float, float, float} %r1, float %d2, 2
  %r3 = insertvalue {float, float, float, float} %r2, float %d3, 3
  ret {float, float, float, float} %r3
}
'''
for _name, _value in (("BARRIER_BYTES", BARRIER_BYTES), ("CONDITION_AT", CONDITION_AT), ("COUNT_AT", COUNT_AT),
                      ("MMA_CELLS", MMA_CELLS)):
    _CONTEXT_IR = _CONTEXT_IR.replace(_name, str(_value))


class _Context(ctypes.Structure):
    """What an emulated thread's special registers, barriers and shuffles read."""
    _fields_ = [("tid", ctypes.c_int32), ("ntid", ctypes.c_int32), ("ctaid", ctypes.c_int32),
                ("nctaid", ctypes.c_int32), ("block_barrier", ctypes.c_void_p), ("warp_barriers", ctypes.c_void_p),
                ("exchange", ctypes.c_void_p), ("between_blocks", ctypes.c_void_p)]


def retarget(nvptx_text):
    """The NVPTX module's text as a host module's (see the module docstring)."""
    text = re.sub(r'target (triple|datalayout) = ".*"\n', "", nvptx_text).replace("define ptx_kernel", "define")
    text = re.sub(r'declare [^\n]*@"?llvm\.nvvm\.[^\n]*\n', "", text)
    for name in SPECIAL_REGISTERS:
        text = re.sub(rf'@"?llvm\.nvvm\.read\.ptx\.sreg\.{name}\.x"?', f'@"grid.{name}"', text)
    text = re.sub(r'@"?llvm\.nvvm\.barrier0"?', '@"grid.barrier"', text)
    text = re.sub(r'@"?llvm\.nvvm\.shfl\.sync\.bfly\.i32"?', '@"grid.shfl.bfly"', text)
    text = re.sub(r'@"?llvm\.nvvm\.mma\.m16n8k8\.row\.col\.tf32"?', '@"grid.mma.tf32"', text)
    text = text.replace(" addrspace(3)", "")
    registers = "".join(f'define internal i32 @"grid.{name}"() {{\n  %context = call ptr @"grid.context"()\n'
                        f'  %at = getelementptr i32, ptr %context, i64 {k}\n  %value = load i32, ptr %at\n'
                        f'  ret i32 %value\n}}\n' for k, name in enumerate(SPECIAL_REGISTERS))
    return text + _CONTEXT_IR + registers


def _entries(nvptx_text):
    """{name: (parameter count, whether it waits on a barrier or shuffles)} of the module's kernels."""
    found = {}
    for match in re.finditer(r'define ptx_kernel [^@]*@"?([\w.$]+)"?\(([^)]*)\)(.*?)\n}\n', nvptx_text, re.S):
        name, parameters, body = match.groups()
        found[name] = (parameters.count("ptr"), any(f"llvm.nvvm.{call}" in body for call in ("barrier0", "shfl", "mma")))
    return found


def _unpacked_arguments(arguments):
    """IR loading `arguments` pointers from %argv, and the call's argument list."""
    loads = "".join(f'  %a{k}.at = getelementptr ptr, ptr %argv, i64 {k}\n  %a{k} = load ptr, ptr %a{k}.at\n'
                    for k in range(arguments))
    return loads, ", ".join(f"ptr %a{k}" for k in range(arguments))


def _serial_driver(name, arguments):
    """`void grid.serial.<name>(ptr argv, i32 blocks, i32 threads)`: a launch that neither waits
    nor shuffles, its threads run one after another on the calling thread (no Python per thread)."""
    loads, call_arguments = _unpacked_arguments(arguments)
    return (f'define void @"grid.serial.{name}"(ptr %argv, i32 %blocks, i32 %threads) {{\nentry:\n'
            f'  %context = call ptr @"grid.context"()\n  %ctaid_at = getelementptr i32, ptr %context, i64 2\n{loads}'
            f'  br label %block\nblock:\n  %b = phi i32 [0, %entry], [%b.next, %block.end]\n'
            f'  store i32 %b, ptr %ctaid_at\n  br label %thread\n'
            f'thread:\n  %t = phi i32 [0, %block], [%t.next, %thread]\n  store i32 %t, ptr %context\n'
            f'  call void @"{name}"({call_arguments})\n  %t.next = add i32 %t, 1\n'
            f'  %t.more = icmp slt i32 %t.next, %threads\n  %b.next = add i32 %b, 1\n'
            f'  %b.more = icmp slt i32 %b.next, %blocks\n  br i1 %t.more, label %thread, label %block.end\n'
            f'block.end:\n  br i1 %b.more, label %block, label %done\ndone:\n  ret void\n}}\n')


def _thread_driver(name, arguments):
    """`void grid.thread.<name>(ptr argv, i32 blocks)`: one emulated thread's whole launch:
    for each block, set the block index, run the entry, leave its barriers, and meet the other
    threads twice (between the meetings the first thread resets the barriers for the next block)."""
    loads, call_arguments = _unpacked_arguments(arguments)
    return (f'define void @"grid.thread.{name}"(ptr %argv, i32 %blocks) {{\nentry:\n'
            f'  %context = call ptr @"grid.context"()\n  %ctaid_at = getelementptr i32, ptr %context, i64 2\n{loads}'
            f'  br label %loop\nloop:\n  %block = phi i32 [0, %entry], [%next, %loop]\n'
            f'  store i32 %block, ptr %ctaid_at\n  call void @"{name}"({call_arguments})\n'
            f'  call void @"grid.leave"()\n  call void @"grid.next_block"()\n  %next = add i32 %block, 1\n'
            f'  %more = icmp slt i32 %next, %blocks\n  br i1 %more, label %loop, label %done\ndone:\n  ret void\n}}\n')


class EmulatedModule:
    """A PTX target module loaded on the host: `launch(entry, pointers, blocks, threads)`
    runs one kernel launch to completion (launches are synchronous, in call order)."""

    def __init__(self, nvptx_text):
        import llvmlite.binding as llvm
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        self.fibers = _FIBERS  # (the module's pthread calls resolve to the fibers' when it compiles)
        for symbol in _LIBC_CALLS:
            library, name = (_FIBERS, _FIBER_CALLS[symbol]) if _FIBERS is not None else (_LIBC, symbol)
            llvm.add_symbol(symbol, ctypes.cast(getattr(library, name), ctypes.c_void_p).value)
        entries = _entries(nvptx_text)
        self.synchronising = {name for name, (_, waits) in entries.items() if waits}
        drivers = "".join((_thread_driver if waits else _serial_driver)(name, count)
                          for name, (count, waits) in entries.items())
        module = llvm.parse_assembly(f'target triple = "{llvm.get_process_triple()}"\n' + retarget(nvptx_text)
                                     + drivers)
        module.verify()
        # this CPU's features: a generic x86-64 would call libgcc's half-float helpers, which
        # MCJIT cannot resolve (float16 programs would jump to address 0)
        machine = llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=1)
        self.engine = llvm.create_mcjit_compiler(module, machine)
        self.engine.finalize_object()
        ctypes.c_int32.from_address(self.engine.get_global_value_address("grid.key")).value = _KEY.value
        self._entries = {}

    def driver(self, kind, name):
        """The ctypes function of grid.<kind>.<name> (kind "serial" or "thread")."""
        key = (kind, name)
        if key not in self._entries:
            address = self.engine.get_function_address(f"grid.{kind}.{name}")
            if not address:
                raise KeyError(f"ember grid emulator: the module has no entry {name!r}")
            arguments = [ctypes.c_void_p, ctypes.c_int32] + ([ctypes.c_int32] if kind == "serial" else [])
            self._entries[key] = ctypes.CFUNCTYPE(None, *arguments)(address)
        return self._entries[key]

    def launch(self, name, pointers, blocks, threads):
        if name not in self.synchronising:
            driver = self.driver("serial", name)
            context = _Context(0, threads, 0, blocks)
            if self.fibers is not None:
                self.fibers.ember_grid_set_context(ctypes.byref(context))
            else:
                _LIBC.pthread_setspecific(_KEY, ctypes.byref(context))
            arguments = (ctypes.c_void_p * max(len(pointers), 1))(*pointers)
            driver(ctypes.addressof(arguments), blocks, threads)
            return
        if threads % WARP:
            raise ValueError(f"ember grid emulator: {name} waits or shuffles, so its blocks need whole warps "
                             f"({threads} threads is not a multiple of {WARP})")
        _run_threads(self.driver("thread", name), pointers, blocks, threads, self.fibers)


class _Barriers:
    """Barriers (see BARRIER_BYTES) for `counts` threads each, in one aligned buffer."""

    def __init__(self, counts):
        self.counts = counts
        self.memory = ctypes.create_string_buffer(BARRIER_BYTES * (len(counts) + 1))
        self.base = -(-ctypes.addressof(self.memory) // BARRIER_BYTES) * BARRIER_BYTES
        for k, count in enumerate(counts):
            at = self.base + k * BARRIER_BYTES
            if _LIBC.pthread_mutex_init(ctypes.c_void_p(at), None) or \
                    _LIBC.pthread_cond_init(ctypes.c_void_p(at + CONDITION_AT), None):
                raise OSError("ember grid emulator: cannot create a barrier")
        self.reset()

    def reset(self):
        """Nobody arrived or left (between blocks, when no thread is inside one)."""
        for k, count in enumerate(self.counts):
            (ctypes.c_int32 * 4).from_address(self.base + k * BARRIER_BYTES + COUNT_AT)[:] = [count, 0, 0, 0]

    def destroy(self):
        for k in range(len(self.counts)):
            at = self.base + k * BARRIER_BYTES
            _LIBC.pthread_cond_destroy(ctypes.c_void_p(at + CONDITION_AT))
            _LIBC.pthread_mutex_destroy(ctypes.c_void_p(at))


def _run_threads(driver, pointers, blocks, threads, fibers=None):
    """A fiber (with `fibers`, the loaded grid_fibers library) or else a thread per GPU thread,
    each running its part of every block (`_thread_driver`)."""
    barriers = _Barriers([threads] + [WARP] * (threads // WARP))
    between_blocks = _Barriers([threads, threads])
    exchange = (ctypes.c_int32 * (threads * MMA_CELLS))()
    arguments = (ctypes.c_void_p * max(len(pointers), 1))(*pointers)
    failures = []
    if fibers is not None:
        contexts = (_Context * threads)(*[
            _Context(tid, threads, 0, blocks, barriers.base, barriers.base + BARRIER_BYTES, ctypes.addressof(exchange),
                     between_blocks.base) for tid in range(threads)])
        status = fibers.ember_grid_run(ctypes.cast(driver, ctypes.c_void_p), ctypes.c_void_p(ctypes.addressof(arguments)),
                                        ctypes.c_int32(blocks), ctypes.c_int32(threads), contexts,
                                        ctypes.c_int64(ctypes.sizeof(_Context)), ctypes.c_int64(FIBER_STACK_BYTES))
        barriers.destroy()
        between_blocks.destroy()
        if status:
            raise MemoryError(f"ember grid emulator: no memory for {threads} fibers' stacks")
        return

    def run(tid):
        context = _Context(tid, threads, 0, blocks, barriers.base, barriers.base + BARRIER_BYTES,
                           ctypes.addressof(exchange), between_blocks.base)
        _LIBC.pthread_setspecific(_KEY, ctypes.byref(context))
        try:
            driver(ctypes.addressof(arguments), blocks)
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)
    workers = [threading.Thread(target=run, args=(tid,), daemon=True) for tid in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    barriers.destroy()
    between_blocks.destroy()
    if failures:
        raise RuntimeError(f"ember grid emulator: a thread failed: {failures[0]!r}") from failures[0]
