"""What `ember.compile` reports about a compiled function (`compiled.report`, `ember explain`):
its traces and why each happened, guards with their source lines, recompiles with advice,
runtime scalars, calls run eagerly and why. frontend/jit.py fills it in."""
from .signatures import recompile_advice


class TraceRecord:
    def __init__(self, number, reason, signature, nodes, segments, guards, seconds):
        self.number, self.reason, self.signature = number, reason, signature
        self.nodes, self.segments, self.guards, self.seconds = nodes, segments, guards, seconds

    def __str__(self):
        return (f"trace #{self.number}: {self.reason}\n      signature: {self.signature}\n"
                f"      {self.nodes} nodes recorded, {self.segments} new segment(s) compiled, "
                f"{self.guards} guard(s), {self.seconds * 1e3:.1f} ms")


class CompileReport:
    """What ember.compile did: traces, segments, guards (with source lines), recompiles."""

    def __init__(self, name, backend):
        self.name, self.backend = name, backend
        self.traces = []
        self.recompiles = []  # reasons, one per trace after the first
        self.guards = {}  # (source, code, how) -> set of outcomes seen
        self.fallback = None
        self.calls = 0
        self.eager_calls = 0  # calls run eagerly: arguments sharing memory, or see `eager_reasons`
        self.eager_reasons = []  # signatures whose traces the compiled program cannot reproduce
        self.compiled_calls = 0
        self.host_only_ops = []  # ops compiled code runs as numpy callbacks (CPU only; see ember.ops host_only)
        self.programs = []  # the traced graph of every compiled segment (to_html draws them)
        self.runtime_scalars = []  # floats read as inputs of the programs (frontend/runtime_scalars.py)
        self.dynamic_dims = []  # which argument dims are dynamic, and which stay static, with why
        self.symbols = ""  # the size symbols of the dynamic program: "s0 = dim 0 of x, dim 0 of y"
        self.runners = []  # weak references to the compiled segments' runners (GPU ones report their choices)

    @property
    def segments(self):
        return sum(t.segments for t in self.traces)

    def __str__(self):
        why = "see below" if self.eager_reasons else "arguments sharing memory"
        eager = f", {self.eager_calls} run eagerly ({why})" if self.eager_calls else ""
        lines = [f"ember.compile report for {self.name} (backend={self.backend})",
                 f"calls: {self.calls} ({self.compiled_calls} served by compiled segments{eager}), "
                 f"traces: {len(self.traces)}, segments compiled: {self.segments}, "
                 f"recompiles: {len(self.recompiles)}"]
        for t in self.traces:
            lines.append("  " + str(t))
        if self.runtime_scalars:
            lines.append("runtime scalars (inputs of the programs since their first change): "
                         + ", ".join(self.runtime_scalars))
        if self.dynamic_dims:
            lines.append("dynamic dims (one program for every size >= 2; sizes 0 and 1 are specialised):")
            lines.extend(f"  {line}" for line in self.dynamic_dims)
            if self.symbols:
                lines.append(f"  symbols: {self.symbols}")
        if self.guards:
            lines.append("guards:")
            for (source, code, how), outcomes in self.guards.items():
                seen = ", ".join(repr(o) for o in sorted(outcomes, key=repr)[:6])
                lines.append(f"  {source or '<unknown>'}: {code or '?'}  [{how}]  outcomes seen: {seen}")
        gemms = [choice for ref in self.runners if ref() is not None
                 for choice in getattr(ref(), "gemm_choices", {}).values()]
        if gemms:
            lines.append("GPU matrix products (cuBLAS or the tiled kernel, per launch):")
            lines.extend(f"  {entry}: {'cuBLAS' if choice == 'cublas' else 'tiles'} ({why})"
                         for entry, choice, why in gemms)
        if self.host_only_ops:
            lines.append("host-only ops (numpy callbacks from the CPU code; no export or GPU):")
            lines.extend(f"  {op}" for op in self.host_only_ops)
        if self.recompiles:
            lines.append("recompiles:")
            for reason in self.recompiles:
                lines.append(f"  {reason}")
                lines.append(f"    to avoid it: {recompile_advice(reason)}")
        if self.eager_reasons:
            lines.append("run eagerly:")
            lines.extend(f"  {r}" for r in self.eager_reasons)
        if self.fallback:
            lines.append(f"fallback: {self.fallback}")
        return "\n".join(lines)

    __repr__ = __str__

    def to_html(self, path):
        """This report as one self-contained HTML page at `path` (compiler/html_report.py): the
        summary, guards and recompiles, and for each compiled program its graph at every stage,
        its kernels with their model lines and times, its memory chart and its compile times."""
        from ember.compiler.html_report import write_report
        guards = [(source, code, how, ", ".join(repr(o) for o in sorted(outcomes, key=repr)[:6]))
                  for (source, code, how), outcomes in self.guards.items()]
        return write_report(path, f"ember.compile report for {self.name}", str(self), guards,
                            [f"{r} (to avoid it: {recompile_advice(r)})" for r in self.recompiles], self.programs)
