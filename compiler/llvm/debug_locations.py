"""LLVM debug locations that carry the model line each kernel came from (provenance).

After a CPU program's module is built, `attach_debug_locations` gives every defined function a
DISubprogram and every instruction a DILocation: a kernel's functions (its own and its outlined
parallel loops, named `kernel.var.loop`) point at the first model line of the kernel's nodes
(file base name and line, as the IR records them, so compiled bytes do not depend on where the
project lives), other functions at line 0 of `ember_program`; the functions named in `skip` (the
entry: straight-line calls, a third of the module's instructions) get none. Inlining keeps them,
so the optimised LLVM IR carries `!dbg` on every instruction and the assembly `.loc` lines.
"""
from llvmlite import ir

I32 = ir.IntType(32)


def attach_debug_locations(module, sources, skip=()):
    """`sources`: {kernel symbol: "model.py:15"} (kernels without a source get line 0)."""
    files = {}

    def file_of(name):
        if name not in files:
            files[name] = module.add_debug_info("DIFile", {"filename": name, "directory": "."})
        return files[name]

    unit = module.add_debug_info("DICompileUnit", {
        "language": ir.DIToken("DW_LANG_C99"), "file": file_of("ember_program"), "producer": "ember",
        "isOptimized": True, "runtimeVersion": 0, "emissionKind": ir.DIToken("LineTablesOnly")}, is_distinct=True)
    module.add_named_metadata("llvm.dbg.cu", unit)
    module.add_named_metadata("llvm.module.flags", [I32(2), "Debug Info Version", I32(3)])
    module.add_named_metadata("llvm.module.flags", [I32(7), "Dwarf Version", I32(4)])
    routine = module.add_debug_info("DISubroutineType", {"types": module.add_metadata([])})
    for function in module.functions:
        if function.is_declaration or not function.blocks or function.name in skip:
            continue
        source = sources.get(function.name.split(".")[0], "")
        filename, _, line = source.rpartition(":")
        if not filename or not line.isdigit():
            filename, line = "ember_program", "0"
        scope = module.add_debug_info("DISubprogram", {
            "name": function.name, "file": file_of(filename), "line": int(line), "type": routine,
            "scopeLine": int(line), "isLocal": True, "isDefinition": True, "isOptimized": True, "unit": unit},
            is_distinct=True)
        function.set_metadata("dbg", scope)
        location = module.add_debug_info("DILocation", {"line": int(line), "column": 0, "scope": scope})
        for block in function.blocks:
            for instruction in block.instructions:
                if "dbg" not in instruction.metadata:
                    instruction.set_metadata("dbg", location)
