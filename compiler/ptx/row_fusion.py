"""Consecutive row kernels as one GPU launch: softmax's row max, row sum and normalisation,
layer norm's mean, variance and scaling. Lowering gives each fusion group its own kernel
(the CPU runs them back to back over rows in cache); on a GPU every kernel is a launch and a
trip through global memory, so target.py merges a run of "rows" launches over the same rows
into one "rows" launch whose block computes a row's statistics and then uses them, with
barriers between (block_statements.py).

Kernels A then B merge when B reads what A wrote only at the row's own element (a row
value, `m[i]`), neither writes what the other reads otherwise, B writes no bytes that A
reads or writes (the memory plan, made for A then B, may give a buffer A no longer needs to
one B writes: merged, one block would overwrite another's rows), and the concatenated row
body is one a block can share (launches.block_roles). B's loop variables and accumulators are
renamed apart, its slots renumbered into the merged kernel's, its checks' error numbers
shifted after A's (consecutive kernels number their errors consecutively, so the merged
kernel's numbering continues the program's).
"""
from .. import loop_ir as L
from .launches import block_roles


def _rewrite(expr, names, slots):
    """`expr` with loop variables and accumulators renamed ({old name: new name}) and loads
    renumbered ({old slot: new slot})."""
    memo = {}

    def go(e):
        if id(e) in memo:
            return memo[id(e)]
        if e.op == "var" and e.attr[0] in names:
            out = L.var(names[e.attr[0]], e.attr[1])
        elif e.op == "acc" and e.attr in names:
            out = L.acc(names[e.attr], e.dtype)
        elif e.op == "load":
            out = L.load(slots[e.attr], go(e.args[0]), e.dtype, e.lo, e.hi)
        elif e.args:
            args = tuple(go(a) for a in e.args)
            out = e if all(a is b for a, b in zip(args, e.args)) else L.rebuild(e, args)
        else:
            out = e
        memo[id(e)] = out
        return out
    return go(expr)


def _rewrite_statements(body, names, slots, error_shift):
    out = []
    for s in body:
        if isinstance(s, L.Loop):
            out.append(L.Loop(L.var(names.get(s.name, s.name), s.extent),
                              _rewrite_statements(s.body, names, slots, error_shift), s.parallel))
        elif isinstance(s, L.Declare):
            out.append(L.Declare(names.get(s.name, s.name), s.dtype, _rewrite(s.init, names, slots)))
        elif isinstance(s, L.Update):
            out.append(L.Update(names.get(s.name, s.name), s.combine, _rewrite(s.value, names, slots),
                                None if s.position is None else _rewrite(s.position, names, slots),
                                None if s.index_name is None else names.get(s.index_name, s.index_name)))
        elif isinstance(s, L.Store):
            out.append(L.Store(slots[s.slot], _rewrite(s.offset, names, slots), _rewrite(s.value, names, slots),
                               s.combine))
        elif isinstance(s, L.Check):
            out.append(L.Check(_rewrite(s.cond, names, slots), s.error + error_shift))
        else:
            raise TypeError(f"row fusion: unexpected {type(s).__name__}")
    return out


def _names_in(body):
    names = set()
    for s in L.walk_statements(body):
        if isinstance(s, L.Loop):
            names.add(s.name)
        elif isinstance(s, L.Declare):
            names.add(s.name)
        elif isinstance(s, L.Update) and s.index_name:
            names.add(s.index_name)
    return names


def _touched(kernel, body):
    """({slot key: {offsets stored}}, {slot key: [offsets loaded]}) of a row body."""
    stores, loads = {}, {}
    for s in L.walk_statements(body):
        if isinstance(s, L.Store):
            stores.setdefault(kernel.slots[s.slot].key, set()).add(s.offset)
        for expr in L.statement_exprs(s):
            for e in expr.walk():
                if e.op == "load":
                    loads.setdefault(kernel.slots[e.attr].key, []).append(e.args[0])
    return stores, loads


def _extent(slot, locations):
    """(where, start byte, end byte) of a slot's buffer: the arena's bytes, or a whole argument."""
    kind, where = locations[slot.key]
    if kind == "arena":
        import numpy as np
        return "arena", where, where + slot.size * np.dtype(slot.dtype).itemsize
    return ("arg", where), 0, 1


def _overlap(slots_a, slots_b, locations):
    """Whether some buffer of `slots_a` and some of `slots_b` share bytes (the memory plan
    was made for the kernels one after the other: a dead buffer's bytes are reused)."""
    for a in slots_a:
        where_a, start_a, end_a = _extent(a, locations)
        for b in slots_b:
            where_b, start_b, end_b = _extent(b, locations)
            if where_a == where_b and start_a < end_b and start_b < end_a:
                return True
    return False


def merge(first, second, locations):
    """One kernel computing `first` then `second` (each a rows kernel: one top-level parallel
    loop over the same rows), or None when they cannot share a launch (module docstring).
    `locations` ({slot key: ("arena", byte offset) | ("arg", k)}) says where buffers live."""
    (rows_a,), (rows_b,) = first.body, second.body
    if rows_a.extent != rows_b.extent or first.scratch_bytes or second.scratch_bytes:
        return None  # (group scratch of two kernels may be the same bytes)
    taken = _names_in(first.body)
    names = {rows_b.name: rows_a.name}
    for name in sorted(_names_in(rows_b.body)):
        fresh, k = name, 0
        while fresh in taken:
            k += 1
            fresh = f"{name}_{k}"
        names[name] = fresh
        taken.add(fresh)
    slots, numbers = list(first.slots), {}
    keys = [s.key for s in slots]
    for number, slot in enumerate(second.slots):
        if slot.key in keys:
            at = keys.index(slot.key)
            slots[at] = L.Slot(slot.key, slot.dtype, slot.size, slots[at].writes or slot.writes)
        else:
            at = len(slots)
            slots.append(slot)
            keys.append(slot.key)
        numbers[number] = at
    body_b = _rewrite_statements(rows_b.body, names, numbers, len(first.errors))
    merged = L.Kernel(f"{first.name}__{second.name}", first.kind, tuple(first.nodes) + tuple(second.nodes), slots,
                      [L.Loop(rows_a.var, list(rows_a.body) + body_b, parallel=True)],
                      list(first.errors) + list(second.errors))
    stores_a, loads_a = _touched(merged, rows_a.body)
    stores_b, loads_b = _touched(merged, body_b)
    if set(stores_a) & set(stores_b) or set(stores_b) & set(loads_a):
        return None
    by_key = {slot.key: slot for slot in slots}
    written_b = [by_key[key] for key in stores_b]
    if _overlap(written_b, [by_key[key] for key in set(loads_a) | set(stores_a)], locations):
        return None  # the second kernel would overwrite bytes the first reads or writes for other rows
    if _overlap([by_key[key] for key in loads_b if key not in stores_a], [by_key[key] for key in stores_a], locations):
        return None  # (a buffer the second reads sharing bytes with one the first writes)
    row = rows_a.name
    for key, offsets in loads_b.items():
        if key not in stores_a:
            continue
        row_values = {o for o in stores_a[key] if L.vars_in(o) == {row}}
        if any(offset not in row_values for offset in offsets):
            return None
    if block_roles(merged.body[0].body) is None:
        return None
    return merged
