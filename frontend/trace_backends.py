"""Which backend compiles each trace of ember.compile (frontend/jit.py), and the compile report's
view of the runners it makes.

The backend asked for compiles traces of host tensors. A trace whose tensors are on a GPU
compiles with the GPU target (frontend/device_ops.backend_for), unless a GPU backend or the
interpreter was chosen explicitly; when the GPU target refuses it (a host-only op such as
sort), its nodes run one by one as eager ops on the device. Every runner, the compiled
autograd's forward and backward programs included, is listed in the report (GPU programs say
there which matrix products cuBLAS computes), and a GPU trace's runners return their results
on the device even when no input is there.
"""
import weakref

from ember.runtime import device_arrays
from ember.runtime.device_arrays import device_of
from .device_ops import backend_for, graph_runner


class TraceBackends:
    """The backends of one compiled function's traces, by the device of their tensors."""

    def __init__(self, backend, report):
        self.backend, self.report = backend, report
        self._reporting = {}  # device key -> ReportingBackend

    def chosen(self, device):
        """The backend of a trace whose tensors are on `device` (a runtime device; None: the host)."""
        if device is None or self.backend.name not in ("llvm",):
            return self.backend
        return backend_for(device)

    def for_device(self, device):
        """`chosen(device)`, compiling through a ReportingBackend."""
        key = None if device is None else id(device)
        if key not in self._reporting:
            self._reporting[key] = ReportingBackend(self.chosen(device), self.report, device is not None)
        return self._reporting[key]

    def compile_segment(self, segment):
        """Compile `segment` (its runner, and its entries in the report)."""
        from ember.compiler.target import HostOnlyError
        chosen, report = self.chosen(segment.device), self.report
        if chosen is not self.backend and chosen.name not in report.backend:
            report.backend += f", {chosen.name} for tensors on cuda"
        try:
            segment.runner = self.for_device(segment.device).compile(segment.graph)
        except HostOnlyError as error:
            if chosen is self.backend:
                raise
            # (the GPU target was this trace's choice, not the caller's: run its nodes as eager ops there)
            segment.runner = graph_runner(segment.graph, segment.device)
            report.eager_reasons.append(f"{segment.graph.name}: runs op by op on the GPU: {error}")
        report.programs.append(segment.graph)
        for op in getattr(segment.runner, "host_only_ops", ()):
            if op not in report.host_only_ops:
                report.host_only_ops.append(op)

    def confirmed_before(self, segment):
        """Did two calls trace `segment`'s graph alike before, here or in an earlier process (a
        backend with a disk cache remembers: compiler/driver.py `confirmed_before`)?"""
        check = getattr(self.for_device(segment.device), "confirmed_before", None)
        return check is not None and check(segment.graph)

    def mark_confirmed(self, segment):
        mark = getattr(self.for_device(segment.device), "mark_confirmed", None)
        if mark is not None:
            mark(segment.graph)


class ReportingBackend:
    """A backend whose runners the compile report lists, and which, for a trace on a GPU, makes
    every runner return its results there (`resident`)."""

    def __init__(self, inner, report, resident):
        self.inner, self.report, self.resident = inner, report, resident
        self.name = inner.name

    def compile(self, graph):
        runner = self.inner.compile(graph)
        if self.resident and hasattr(runner, "resident"):
            runner.resident = True
        try:
            self.report.runners.append(weakref.ref(runner))
        except TypeError:  # (a runner that cannot be referenced weakly reports nothing)
            pass
        return runner

    def __getattr__(self, name):
        return getattr(self.inner, name)


def device_of_tensors(tensors):
    """The device a traced call's tensors are on (None: the host): the first one found."""
    if not device_arrays.in_use:
        return None
    for t in tensors:
        found = device_of(t._data)
        if found is not None:
            return found
    return None
