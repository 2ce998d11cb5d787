"""One program's LLVM module optimised and emitted by two processes (the CPU target's `link`).

llvmlite makes one LLVM call at a time per process, and LLVM takes most of a big program's
cold compile (a transformer step: 130 kernel functions). Where a CPU is spare, `split_module`
cuts the module's text in two: the kernels the entry calls, with the functions only they use
(their outlined parallel bodies), go to one half or the other by size; helpers that several
kernels use are copied into both (internal to each); the entry stays in this process's half,
which declares the other half's kernels. Those kernels become `hidden` (linked between the two
objects, not exported by the library). `compile_in_two` forks a child for the other half and
compiles its own meanwhile; the linker joins the objects. The split depends on the module's
text alone, so the library's bytes do not depend on the machine's load: where this process
cannot fork (no fork, other threads) or the child fails, it compiles both halves itself. A
module too small to be worth it, or with global variables, is compiled whole (`None`).
"""
import os
import re
import tempfile
import threading
import time

from .support_library import _reap

MIN_FUNCTIONS = 24  # fewer kernel functions: one process (a fork and a second parse cost more)
PATIENCE_SECONDS = 30.0  # at least this long for the child, before this process compiles its half

_NAME = re.compile(r'@("(?:[^"\\]|\\.)*"|[-a-zA-Z$._][-a-zA-Z$._0-9]*)')


def _name(token):
    return token[1:-1] if token.startswith('"') else token


class _Function:
    def __init__(self, lines):
        self.lines = lines
        self.header = lines[0]
        self.name = _name(_NAME.search(self.header).group(1))
        self.internal = self.header.startswith("define internal ") or self.header.startswith("define private ")
        # (what LLVM spends on it: an unoptimised function, the entry, costs a fifth of its text)
        self.size = sum(len(line) for line in lines) // (5 if " optnone " in self.header + " " else 1)
        self.references = {_name(m) for line in lines[1:] for m in _NAME.findall(line)} - {self.name}

    def as_hidden_definition(self):
        return [re.sub(r"^define (internal |private )?", "define hidden ", self.header, count=1)] + self.lines[1:]

    def as_declaration(self):
        """`declare hidden <type> @name(<parameter types and attributes>)`."""
        head, rest = self.header.split("@", 1)
        ret = head.replace("define", "", 1).replace("internal", "", 1).replace("private", "", 1).strip()
        open_at = rest.index("(")
        depth, close_at = 0, None
        for i, ch in enumerate(rest[open_at:], open_at):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                close_at = i
                break
        params = [re.sub(r'\s*%("(?:[^"\\]|\\.)*"|[-a-zA-Z$._0-9]+)\s*$', "", p.strip())
                  for p in _split_top(rest[open_at + 1:close_at])]
        return f"declare hidden {ret} @{rest[:open_at]}({', '.join(p for p in params if p)})"


def _split_top(text):
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:])
    return parts


def _parse(text):
    """(other top-level lines, [functions]) of llvmlite's module text; None for text with
    global variables (their definitions could not be copied into both halves)."""
    other, functions, current = [], [], None
    for line in text.split("\n"):
        if current is not None:
            current.append(line)
            if line == "}":
                functions.append(_Function(current))
                current = None
        elif line.startswith("define "):
            current = [line]
        elif line.startswith("@"):
            return None
        else:
            other.append(line)
    return (other, functions) if current is None else None


def split_module(text, entry):
    """(this process's module text, the other process's), or None when not worth splitting."""
    parsed = _parse(text)
    if parsed is None:
        return None
    other, functions = parsed
    by_name = {f.name: f for f in functions}
    if entry not in by_name or len(functions) < MIN_FUNCTIONS:
        return None
    users = {f.name: set() for f in functions}
    for f in functions:
        for name in f.references & users.keys():
            users[name].add(f.name)
    # a kernel may move when only the entry calls it; it takes the functions only it reaches
    roots = [name for name in by_name[entry].references if name in by_name and by_name[name].internal
             and users[name] == {entry}]
    reached = {}
    for root in roots:
        stack, seen = [root], {root}
        while stack:
            for name in by_name[stack.pop()].references:
                if name in by_name and name != entry and name not in seen and by_name[name].internal:
                    seen.add(name)
                    stack.append(name)
        for name in seen:
            reached.setdefault(name, set()).add(root)
    # a function only one kernel reaches, and only functions of that kernel's group call, moves
    # with it; every other function a kernel reaches (and all it reaches) is copied into both
    # halves (internal to each)
    owner = {name: next(iter(owners)) for name, owners in reached.items() if len(owners) == 1 and name not in roots}
    changed = True
    while changed:
        changed = False
        for name in list(owner):
            if any(owner.get(user, user if user in roots else None) != owner[name] for user in users[name]):
                del owner[name]
                changed = True
    shared = set(reached) - set(roots) - set(owner)
    stack = list(shared)
    while stack:  # (what a copied function calls is copied too)
        for name in by_name[stack.pop()].references:
            if name in by_name and by_name[name].internal and name not in shared and name not in roots:
                shared.add(name)
                owner.pop(name, None)
                stack.append(name)
    groups = {root: [root] for root in roots}
    for name, root in owner.items():
        groups[root].append(name)
    sizes = {root: sum(by_name[n].size for n in members) for root, members in groups.items()}
    total = sum(f.size for f in functions)
    moved, moved_size = [], 0
    for root in sorted(groups, key=lambda r: -sizes[r]):
        if moved_size + sizes[root] <= total / 2:
            moved.append(root)
            moved_size += sizes[root]
    if not moved or moved_size < total / 8:
        return None
    moved_names = {n for root in moved for n in groups[root]}
    own, side = list(other), list(other)
    for f in functions:
        if f.name in moved_names:
            side += f.as_hidden_definition() if f.name in moved else f.lines
            if f.name in moved:
                own.append(f.as_declaration())
        else:
            own += f.lines
            if f.name in shared:
                side += f.lines
    return "\n".join(own), "\n".join(side)


def compile_in_two(target, module_text, entry, timer):
    """[object code of this process's half, of the child's half] and the optimised ModuleRef
    of this process's half, or None (see the module docstring)."""
    halves = split_module(module_text, entry)
    if not halves:
        return None
    own_text, side_text = halves
    pid = None
    if _can_fork():
        folder = tempfile.mkdtemp(prefix="ember-split-")
        side_path = os.path.join(folder, "side.o")
        try:
            pid = os.fork()
        except OSError:  # (no memory or processes to spare)
            pid = None
    if pid is None:
        with timer("optimize"):
            own, side = _optimized(target, own_text), _optimized(target, side_text)
        with timer("emit"):
            return [target.object_code(own), target.object_code(side)], own
    if pid == 0:  # the child: compile the other half, store it, leave without the parent's exit code
        status = 1
        try:
            code = target.object_code(_optimized(target, side_text))
            with open(side_path + ".part", "wb") as f:
                f.write(code)
            os.replace(side_path + ".part", side_path)
            status = 0
        finally:
            os._exit(status)
    started = time.perf_counter()
    try:
        with timer("optimize"):
            own = _optimized(target, own_text)
        with timer("emit"):
            own_code = target.object_code(own)
        with timer("wait"):
            deadline = started + max(PATIENCE_SECONDS, 3 * (time.perf_counter() - started))
            while not _reap(pid) and time.perf_counter() < deadline:
                time.sleep(0.002)
        if os.path.exists(side_path):
            with open(side_path, "rb") as f:
                side_code = f.read()
        else:  # the child failed or took far too long: this process compiles its half
            with timer("optimize"):
                side_code = target.object_code(_optimized(target, side_text))
        return [own_code, side_code], own
    finally:
        _reap(pid, kill=True)
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


def _optimized(target, text):
    from ..llvm.target import run_pipeline
    llvm = target.binding()
    module_ref = llvm.parse_assembly(text)
    module_ref.verify()
    run_pipeline(module_ref, target.target_machine(), target.optimize_speed_level, target.optimize_unrolling)
    return module_ref


def _can_fork():
    """fork exists, and this process is single-threaded (a fork while another thread holds a
    lock, malloc's or LLVM's, could leave the child stuck) and has another CPU to use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return hasattr(os, "fork") and threading.active_count() == 1 and cpus > 1
