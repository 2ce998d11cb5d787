"""`ptxas` on the PTX target's output: `ember dump --target cuda --stage sass-check` and the
tests. ptxas (the CUDA toolkit's PTX assembler, on PATH or under CUDA_HOME) compiles the PTX
to machine code for a compute capability and reports each entry's resources: registers per
thread, shared memory per block, stack and spills (a spill means the kernel ran out of
registers), barriers.
"""
import os
import re
import shutil
import subprocess
import tempfile


class PtxasMissing(RuntimeError):
    """No ptxas here: the message says where ember looked."""


def find_ptxas():
    """The ptxas program: on PATH, else under CUDA_HOME/bin; PtxasMissing when neither has it."""
    found = shutil.which("ptxas")
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if found is None and home and os.access(os.path.join(home, "bin", "ptxas"), os.X_OK):
        found = os.path.join(home, "bin", "ptxas")
    if found is None:
        raise PtxasMissing("ember: checking PTX needs the CUDA toolkit's ptxas, which is neither on PATH nor in "
                           "$CUDA_HOME/bin; install the toolkit (or pip install nvidia-cuda-nvcc) and put its bin "
                           "folder on PATH")
    return found


def assemble(ptx, compute_capability):
    """(ok, ptxas's report) for PTX text assembled for `compute_capability` with -v."""
    with tempfile.TemporaryDirectory(prefix="ember-ptxas-") as folder:
        source = os.path.join(folder, "program.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        done = subprocess.run([find_ptxas(), "-v", f"-arch={compute_capability}", source, "-o",
                               os.path.join(folder, "program.cubin")], capture_output=True, text=True, timeout=300)
    return done.returncode == 0, done.stdout + done.stderr


def resource_usage(report):
    """{entry: {"registers", "shared_bytes", "stack_bytes", "spill_stores", "spill_loads", "barriers"}}
    from ptxas -v's report."""
    usage, current = {}, None
    for line in report.splitlines():
        match = re.search(r"Compiling entry function '(\w+)'", line)
        if match:
            current = usage.setdefault(match.group(1), {"registers": 0, "shared_bytes": 0, "stack_bytes": 0,
                                                        "spill_stores": 0, "spill_loads": 0, "barriers": 0})
            continue
        if current is None:
            continue
        for key, pattern in (("stack_bytes", r"(\d+) bytes stack frame"), ("spill_stores", r"(\d+) bytes spill stores"),
                             ("spill_loads", r"(\d+) bytes spill loads"), ("registers", r"Used (\d+) registers"),
                             ("barriers", r"used (\d+) barriers"), ("shared_bytes", r"(\d+) bytes smem")):
            found = re.search(pattern, line)
            if found:
                current[key] = int(found.group(1))
    return usage


def sass_check(ptx, compute_capability):
    """The text of `--stage sass-check`: one line per entry with its resources, or ptxas's
    errors (RuntimeError) when it rejects the PTX."""
    ok, report = assemble(ptx, compute_capability)
    if not ok:
        raise RuntimeError(f"ptxas rejected the PTX for {compute_capability}:\n{report.strip()}")
    usage = resource_usage(report)
    width = max((len(name) for name in usage), default=5)
    lines = [f"// ptxas -v -arch={compute_capability}: {len(usage)} entries",
             f"// {'entry':<{width}}  registers  shared bytes  stack bytes  spill stores/loads  barriers"]
    for name, use in usage.items():
        lines.append(f"   {name:<{width}}  {use['registers']:9}  {use['shared_bytes']:12}  {use['stack_bytes']:11}  "
                     f"{use['spill_stores']:>9}/{use['spill_loads']:<8}  {use['barriers']:8}")
    return "\n".join(lines) + "\n"
