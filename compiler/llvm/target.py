"""The base of every LLVM target: llvmlite set up once, one module per program for the target's
triple and data layout, LLVM's optimisation pipeline, and machine code or assembly out.

A concrete target (compiler/cpu/target.py; a PTX one the same way) says which machine it
compiles for (`target_machine`), writes its kernels and entry ABI into the module (`emit`),
and links and loads the result. Its intrinsic and math tables (`float_intrinsics`,
`math_functions`) decide how scalar expressions (compiler/llvm/scalar.py) compute sqrt, exp,
sin and the like on that machine. Importing this file does not import llvmlite (0.17 s).
"""
import threading

from ember.ir.provenance import annotate_functions, describe_sources
from ..stage_timer import StageTimer
from ..target import Target

_INIT_LOCK = threading.Lock()
_initialized = set()  # "native", "all"


def llvm_binding(all_targets=False):
    """llvmlite.binding with the native target, its asm printer and parser initialised (once);
    with `all_targets`, every target LLVM was built with (NVPTX among them) as well."""
    import llvmlite.binding as llvm
    wanted = "all" if all_targets else "native"
    if wanted not in _initialized:
        with _INIT_LOCK:
            if "native" not in _initialized:
                llvm.initialize_native_target()
                llvm.initialize_native_asmprinter()
                llvm.initialize_native_asmparser()
                _initialized.add("native")
            if all_targets and "all" not in _initialized:
                llvm.initialize_all_targets()
                llvm.initialize_all_asmprinters()
                _initialized.add("all")
    return llvm


def run_pipeline(module_ref, target_machine, speed_level=3, unrolling=True, vectorize=True):
    """LLVM's default O`speed_level` pipeline for `target_machine` over a parsed module (an
    llvmlite ModuleRef), in place; returns the module."""
    llvm = llvm_binding()
    tuning = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    tuning.loop_vectorization = vectorize
    tuning.slp_vectorization = vectorize
    tuning.loop_unrolling = unrolling
    builder = llvm.create_pass_builder(target_machine, tuning)
    builder.getModulePassManager().run(module_ref, builder)
    return module_ref


class LLVMTarget(Target):
    """A target whose code is an llvmlite module compiled by LLVM.

    Subclasses give `triple()`, `data_layout()` and `target_machine()`, and may replace the
    tables: `float_intrinsics` (op -> overloaded LLVM intrinsic, e.g. "sqrt" -> "llvm.sqrt";
    an op missing here and in `math_functions()` has no lowering on the target),
    `math_functions()` (op -> emitter(builder, x) writing the value inline) and
    `defined_intrinsics` (for an op of several operands that LLVM cannot lower on the target:
    an intrinsic name of the target's own whose body `define_intrinsics` writes)."""

    code_stages = ("llvm", "asm")
    float_intrinsics = {"sqrt": "llvm.sqrt", "sin": "llvm.sin", "cos": "llvm.cos", "floor": "llvm.floor",
                        "ceil": "llvm.ceil", "round": "llvm.roundeven", "abs": "llvm.fabs",
                        "maximum": "llvm.maximum", "minimum": "llvm.minimum", "pow": "llvm.pow",
                        "copysign": "llvm.copysign"}
    # intrinsic names of `float_intrinsics` the target computes itself (name -> emitter(builder,
    # *operands)): `define_intrinsics` gives their declarations an inlined body
    defined_intrinsics = {}
    all_llvm_targets = False  # a target other than the host's needs every LLVM target initialised
    optimize_speed_level = 3
    optimize_unrolling = True

    def math_functions(self):
        """{op: emitter(builder, x)}: the inlined polynomials of compiler/llvm/math.py."""
        from . import math as llvm_math
        return dict(llvm_math.EMITTERS)

    def define_intrinsics(self, module):
        """Give every function of `module` declared for one of `defined_intrinsics` (as
        "<name>.f32", "<name>.f64", by compiler/llvm/scalar.py's `intrinsic`) an internal,
        always-inlined body: the emitter's code, so optimisation leaves no call behind."""
        from llvmlite import ir
        for function in list(module.functions):
            emitter = self.defined_intrinsics.get(function.name.rsplit(".", 1)[0])
            if emitter is None or not function.is_declaration:
                continue
            function.linkage = "internal"
            function.attributes.add("alwaysinline")
            builder = ir.IRBuilder(function.append_basic_block("entry"))
            builder.ret(emitter(builder, *function.args))
        return module

    def triple(self):
        raise NotImplementedError(f"{type(self).__name__} names no target triple")

    def data_layout(self):
        raise NotImplementedError(f"{type(self).__name__} gives no data layout")

    def target_machine(self):
        """The llvmlite TargetMachine that optimises and emits this target's code."""
        raise NotImplementedError(f"{type(self).__name__} gives no target machine")

    def binding(self):
        return llvm_binding(self.all_llvm_targets)

    def new_module(self, name):
        """An empty llvmlite `ir.Module` with the target's triple and data layout."""
        self.binding()
        from llvmlite import ir
        module = ir.Module(name=name)
        module.triple = self.triple()
        module.data_layout = self.data_layout()
        return module

    def optimize(self, module, timer=None):
        """The llvmlite ir.Module parsed, verified and optimised (a ModuleRef). `timer`
        (a StageTimer) times the "llvm ir" and "optimize" stages."""
        timer = timer or StageTimer()
        llvm = self.binding()
        with timer("llvm ir"):
            module_ref = llvm.parse_assembly(str(module))
            module_ref.verify()
        with timer("optimize"):
            run_pipeline(module_ref, self.target_machine(), self.optimize_speed_level, self.optimize_unrolling)
        return module_ref

    def object_code(self, module_ref):
        return self.target_machine().emit_object(module_ref)

    def assembly(self, module_ref):
        return self.target_machine().emit_assembly(module_ref)

    def render(self, lowered, stage, module_ref=None):
        """The optimised LLVM IR ("llvm") or assembly ("asm") of a lowered program."""
        if stage not in self.code_stages:
            raise ValueError(f"unknown code stage {stage!r} for the {self.name} target; "
                             f"stages: {', '.join(self.code_stages)}")
        module_ref = module_ref or self.optimize(self.emit(lowered))
        text = str(module_ref) if stage == "llvm" else self.assembly(module_ref)
        notes = {k.name: describe_sources(lowered.graph, k.nodes) for k in lowered.kernels}
        return annotate_functions(text, notes, ";" if stage == "llvm" else "#")
