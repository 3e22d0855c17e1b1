"""Data-race detection for the interpreter's GPU runs: vector-clock happens-before, FastTrack style.

Actors: every thread of the co-scheduled unit (one block, or every block of a cluster) and, per
thread, its async proxy (the engine that performs its cp.async / TMA / wgmma work). Actor `a` of
a unit of `n` threads is thread `a` (linear, block-major) when `a < n`, else the async proxy of
thread `a - n`. All clocks of a unit live in one matrix `C` (actors x actors): row `a` is actor
`a`'s vector clock, `C[a, a]` its own clock. A barrier over a group sets every member's row to
the group's maximum then ticks each member (`sync`); `release` / `acquire` pass a clock through
a sync object (mbarrier phases, cp.async groups).

Each tracked buffer (shared: per block; global: per launch, the parameters the kernel writes and
its global allocations) has a `Shadow`: per element the last write (global actor id, clock, site,
atomic?) and the reads since (one epoch, promoted to a set when reads are concurrent). An access
races when a conflicting earlier one (at least one write, not both atomic) is not ordered before
it; accesses of different units (blocks of a grid outside one cluster) are never ordered.
Region accesses (intrinsics) are checked with numpy over all their elements at once.

Example:
    >>> import numpy as np
    >>> tr = Tracker("k", seed=1, sites=["store S[t] #1", "load S[0] #2"])
    >>> u = tr.unit([(0, 0, 0)], [(0, 0, 0), (1, 0, 0)])
    >>> rd, wr = tr.hooks(u, np.zeros(2, "float32"), SHARED_BUF)
    >>> wr(0, 0, 0)  # element 0, site 0, thread 0
    >>> try:
    ...     rd(0, 1, 1)  # thread 1 reads it: nothing orders the two
    ... except RaceError as e:
    ...     print(str(e).split(":")[1].strip())
    data race on shared buffer 'S' element (0,)
"""

from __future__ import annotations

import numpy as np

from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.nodes import Buffer

SHARED_BUF = Buffer("S", (2,), "float32", "shared")  # for the docstring example


class RaceError(ExecutionError):
    """Two accesses to one element, at least one a write (not both atomic), that nothing orders:
    names the kernel, buffer, element, both threads (block, thread) and both statements."""


class Unit:
    """The co-scheduled blocks (one, or a cluster) and their clock matrix."""

    def __init__(self, index: int, bids: list, tids: list):
        self.index = index
        self.bids = bids
        self.tids = tids
        self.nt = len(tids)
        self.nthreads = len(bids) * len(tids)
        self.nactors = 2 * self.nthreads
        self.clock = np.zeros((self.nactors, self.nactors), np.int32)
        np.fill_diagonal(self.clock, 1)
        self.keys: dict = {}  # sync object -> released vector clock

    def who(self, actor: int) -> str:
        a = actor % self.nthreads
        name = f"(block {self.bids[a // self.nt]}, thread {self.tids[a % self.nt]})"
        return name if actor < self.nthreads else f"async proxy of {name}"

    def sync(self, actors) -> None:
        actors = np.asarray(actors, np.int64)
        c = self.clock
        c[actors] = c[actors].max(axis=0)
        c[actors, actors] += 1

    def release(self, actor: int, key) -> None:
        old = self.keys.get(key)
        row = self.clock[actor]
        self.keys[key] = row.copy() if old is None else np.maximum(old, row)
        row[actor] += 1

    def acquire(self, actor: int, key) -> None:
        vc = self.keys.get(key)
        if vc is not None:
            np.maximum(self.clock[actor], vc, out=self.clock[actor])

    def fork(self, child: int, parent: int) -> None:
        """`child` happens-after everything `parent` did so far."""
        np.maximum(self.clock[child], self.clock[parent], out=self.clock[child])
        self.clock[parent, parent] += 1


class Shadow:
    """The access history of one buffer instance (see the module docstring): per element the last
    plain write, and up to SLOTS accesses since it that may be concurrent with each other: plain
    reads and atomic writes (`r_atom`), each slot one (actor, clock, site) epoch; more spill into
    `extra` ({flat index: {(gid, atomic): (clock, site)}})."""

    def __init__(self, buffer: Buffer, array: np.ndarray, what: str):
        n = array.size
        self.buffer, self.array, self.what, self.unit = buffer, array, what, None
        # int32 keeps a shadow at 64 bytes per element (global ids, clocks and sites stay far below 2**31)
        self.w_gid = np.full(n, -1, np.int32)
        self.w_clk = np.zeros(n, np.int32)
        self.w_site = np.zeros(n, np.int32)
        self.r_gid = np.full((n, SLOTS), -1, np.int32)
        self.r_clk = np.zeros((n, SLOTS), np.int32)
        self.r_site = np.zeros((n, SLOTS), np.int32)
        self.r_atom = np.zeros((n, SLOTS), bool)
        self.r_any = np.zeros(n, bool)  # some slot is in use (the common no-read case skips them)
        self.extra: dict[int, dict] = {}


SMALL = 32  # regions of at most this many elements by one actor are checked element by element
SLOTS = 4  # reads / atomics of one element kept in arrays (one ordered before a later one of its kind is dropped)


class Tracker:
    """Race checking for one launch: the units run so far, the shadows, the statement sites."""

    def __init__(self, kernel: str, seed, sites):
        self.kernel = kernel
        self.seed = seed
        self.sites = list(sites)
        self.site_ids = {s: i for i, s in enumerate(self.sites)}
        self.units: list[Unit] = []
        self.by_array: dict[int, Shadow] = {}
        self.shadows: list[Shadow] = []
        self.stride = 0  # global actor id = unit index * stride + actor
        self.hook_cache: dict = {}  # (unit, actor, shadow) -> (read, write)

    def site(self, text: str) -> int:
        i = self.site_ids.get(text)
        if i is None:
            i = self.site_ids[text] = len(self.sites)
            self.sites.append(text)
        return i

    def unit(self, bids: list, tids: list) -> Unit:
        u = Unit(len(self.units), bids, tids)
        self.stride = max(self.stride, u.nactors)
        self.units.append(u)
        return u

    def end_unit(self, u: Unit) -> None:
        """Forget the unit's shared-memory shadows (their arrays die with the blocks)."""
        for key in [k for k, s in self.by_array.items() if s.what == "shared" and s.unit is u]:
            del self.by_array[key]
        self.hook_cache.clear()
        u.clock = None

    # -- shadows -------------------------------------------------------------------------------

    def shadow(self, array: np.ndarray, buffer: Buffer, unit: Unit) -> Shadow:
        s = self.by_array.get(id(array))
        if s is None:
            what = "shared" if buffer.scope == "shared" else "global"
            s = Shadow(buffer, array, what)
            s.unit = unit
            self.by_array[id(array)] = s
            self.shadows.append(s)
        return s

    def lookup(self, array: np.ndarray):
        return self.by_array.get(id(array))

    def gid_name(self, gid: int) -> str:
        u = self.units[gid // self.stride]
        return u.who(gid % self.stride)

    # -- errors --------------------------------------------------------------------------------

    def race(self, s: Shadow, flat: int, later: tuple, earlier: tuple) -> RaceError:
        """later / earlier: (kind, gid, site id)."""
        elem = tuple(int(x) for x in np.unravel_index(int(flat), s.buffer.shape))
        (k1, g1, s1), (k0, g0, s0) = later, earlier
        site0, site1 = self.sites[s0], self.sites[s1]
        u1, u0 = g1 // self.stride, g0 // self.stride
        async0 = g0 % self.stride >= self.units[u0].nthreads
        if u1 != u0:
            why = "different blocks of a grid are unordered (only atomics may conflict)"
        elif async0 and k0 == "write":
            done = "read" if k1 == "read" else "written"
            op = "cp.async" if site0.startswith("cp.async") else f"asynchronous '{site0.split(' ')[0]}'"
            if g1 % self.stride == g0 % self.stride - self.units[u0].nthreads:
                why = f"{done} before its {op} wait"
            else:
                why = f"{done} by another thread without a wait for the {op} then a barrier between"
        else:
            why = "no barrier orders them"
        return RaceError(
            f"kernel '{self.kernel}': data race on {s.what} buffer '{s.buffer.name}' element {elem}: "
            f"{k1} by {self.gid_name(g1)} at '{site1}' and earlier {k0} by {self.gid_name(g0)} at "
            f"'{site0}': {why} (seed {self.seed})")

    # -- scalar accesses (the generated code's hooks) ------------------------------------------

    def hooks(self, unit: Unit, array: np.ndarray, buffer: Buffer):
        """(read, write) functions `read(flat, site, actor)`, `write(flat, site, actor, atomic=False)`
        of the unit's accesses to `array` (one pair per unit and buffer, shared by its threads)."""
        return self.shadow_hooks(unit, self.shadow(array, buffer, unit))

    def shadow_hooks(self, unit: Unit, s: Shadow):
        key = (unit.index, id(s))
        out = self.hook_cache.get(key)
        if out is None:
            out = self.hook_cache[key] = self._make_hooks(unit, s)
        return out

    def _make_hooks(self, unit: Unit, s: Shadow):
        base = unit.index * self.stride
        ui = unit.index
        stride = self.stride
        clock = unit.clock
        w_gid, w_clk, w_site = s.w_gid, s.w_clk, s.w_site
        r_gid, r_clk, r_site, r_atom, r_any = s.r_gid, s.r_clk, s.r_site, s.r_atom, s.r_any
        extra = s.extra
        slots = range(SLOTS)

        def ordered(g, c, a) -> bool:
            return g == a + base or (g // stride == ui and c <= clock[a, g - base])

        def record(i, site, atomic, a):
            """Enter this access into a slot: an empty one, or one of its kind ordered before it."""
            me = a + base
            gs, kinds = r_gid[i].tolist(), r_atom[i].tolist()
            free = -1
            for k in slots:
                g = gs[k]
                if g < 0 or (kinds[k] == atomic and (g == me or (g // stride == ui and
                                                                 r_clk[i, k] <= clock[a, g - base]))):
                    if free < 0:
                        free = k
                    elif g >= 0:
                        r_gid[i, k] = -1  # ordered before this access of its kind: this one covers it
            now = clock[a, a]
            if free >= 0:
                r_gid[i, free], r_clk[i, free], r_site[i, free], r_atom[i, free] = me, now, site, atomic
            else:
                extra.setdefault(i, {})[(me, atomic)] = (int(now), site)

        def conflicts(i, site, kind, only_atomic, any_kind, a):
            """Raise on a slot / extra entry that conflicts with this access and is not ordered."""
            gs, kinds = r_gid[i].tolist(), r_atom[i].tolist()
            for k in slots:
                g = gs[k]
                if g >= 0 and (any_kind or kinds[k] == only_atomic) and not ordered(g, r_clk[i, k], a):
                    raise self.race(s, i, (kind, a + base, site), ("atomic write" if kinds[k] else "read", g,
                                                                   int(r_site[i, k])))
            if extra and i in extra:
                for (g, atom), (c, st) in extra[i].items():
                    if (any_kind or atom == only_atomic) and not ordered(g, c, a):
                        raise self.race(s, i, (kind, a + base, site), ("atomic write" if atom else "read", g, st))

        def rd(i, site, a):
            g = w_gid[i]
            if g >= 0 and g != a + base and not (g // stride == ui and w_clk[i] <= clock[a, g - base]):
                raise self.race(s, i, ("read", a + base, site), ("write", int(g), int(w_site[i])))
            if r_any[i]:
                conflicts(i, site, "read", True, False, a)  # reads conflict with atomic writes
                record(i, site, False, a)
            else:  # the first access since the last write: slot 0
                r_gid[i, 0], r_clk[i, 0], r_site[i, 0], r_atom[i, 0] = a + base, clock[a, a], site, False
                r_any[i] = True

        def wr(i, site, a, atomic=False):
            g = w_gid[i]
            if g >= 0 and g != a + base and not (g // stride == ui and w_clk[i] <= clock[a, g - base]):
                raise self.race(s, i, ("atomic write" if atomic else "write", a + base, site),
                                ("write", int(g), int(w_site[i])))
            if atomic:  # conflicts with reads only; kept beside them
                conflicts(i, site, "atomic write", False, False, a)
                record(i, site, True, a)
                r_any[i] = True
                return
            if r_any[i]:
                conflicts(i, site, "write", False, True, a)
                if extra:
                    extra.pop(i, None)
                r_gid[i] = -1
                r_any[i] = False
            w_gid[i] = a + base
            w_clk[i] = clock[a, a]
            w_site[i] = site

        return rd, wr

    # -- region accesses (intrinsics) ----------------------------------------------------------

    def access(self, unit: Unit, s: Shadow, actors, flat, site: int, write: bool, atomic: bool = False) -> None:
        """Check and record accesses of elements `flat` (int array) by `actors` (int array of the
        same length, or one int) of `unit`. Out-of-range indices are left to the intrinsic's own
        bounds check."""
        flat = np.asarray(flat, np.int64).reshape(-1)
        if flat.size == 0 or flat.min() < 0 or flat.max() >= s.w_gid.size:
            return
        atomic = bool(atomic and write)
        if flat.size <= SMALL and isinstance(actors, (int, np.integer)):  # a few elements: Python is faster
            rd, wr = self.shadow_hooks(unit, s)
            a = int(actors)
            for i in flat.tolist():
                if write:
                    wr(i, site, a, atomic)
                else:
                    rd(i, site, a)
            return
        actors = np.broadcast_to(np.asarray(actors, np.int64), flat.shape)
        if flat.size > 1 and np.unique(flat).size != flat.size:  # an element twice: one access at a time
            for a, i in zip(actors.tolist(), flat.tolist()):
                self.access(unit, s, a, np.array([i]), site, write, atomic)
            return
        kind = "atomic write" if atomic else "write" if write else "read"
        stride, ui = self.stride, unit.index
        base = ui * stride
        me = actors + base
        clock = unit.clock
        now = clock[actors, actors]

        # the last plain write must be ordered before any access
        g = s.w_gid[flat]
        local = g // stride == ui
        bad = (g >= 0) & (g != me) & (~local | (s.w_clk[flat] > clock[actors, np.where(local, g - base, 0)]))
        if bad.any():
            k = int(np.argmax(bad))
            raise self.race(s, flat[k], (kind, int(me[k]), site), ("write", int(g[k]), int(s.w_site[flat[k]])))
        # the slots: ordered before this access?
        sg, sc, sa = s.r_gid[flat], s.r_clk[flat], s.r_atom[flat]
        local = (sg // stride == ui) & (sg >= 0)
        known = clock[actors[:, None], np.where(local, sg - base, 0)]
        before = (sg < 0) | (sg == me[:, None]) | (local & (sc <= known))
        relevant = np.ones_like(before) if write and not atomic else (sa != atomic)  # what conflicts
        bad = ~before & relevant & (sg >= 0)
        if bad.any():
            k, j = np.argwhere(bad)[0]
            raise self.race(s, flat[k], (kind, int(me[k]), site), ("atomic write" if sa[k, j] else "read",
                                                                   int(sg[k, j]), int(s.r_site[flat[k], j])))
        if s.extra:
            for k in np.flatnonzero(np.fromiter((int(i) in s.extra for i in flat), bool, flat.size)).tolist():
                a, i = int(actors[k]), int(flat[k])
                for (g0, atom), (c, st) in s.extra[i].items():
                    if (write and not atomic or atom != atomic) and g0 != me[k] and not (
                            g0 // stride == ui and c <= clock[a, g0 - base]):
                        raise self.race(s, i, (kind, int(me[k]), site), ("atomic write" if atom else "read", g0, st))
                if write and not atomic:
                    del s.extra[i]
        if write and not atomic:
            s.w_gid[flat] = me
            s.w_clk[flat] = now
            s.w_site[flat] = site
            s.r_gid[flat] = -1
            s.r_any[flat] = False
            return
        # record: into an empty slot or one of the same kind ordered before this access
        repl = (sg < 0) | ((sa == atomic) & before)
        has = repl.any(axis=1)
        first = repl.argmax(axis=1)
        rows = np.arange(flat.size)
        drop = repl & (sg >= 0)
        drop[rows, first] = False
        sg[drop] = -1  # accesses of its kind ordered before this one: it covers them
        ss = s.r_site[flat]
        rh, fh = rows[has], first[has]
        sg[rh, fh] = me[has]
        sc[rh, fh] = now[has]
        ss[rh, fh] = site
        sa[rh, fh] = atomic
        s.r_gid[flat], s.r_clk[flat], s.r_site[flat], s.r_atom[flat] = sg, sc, ss, sa
        s.r_any[flat] = True
        for k in np.flatnonzero(~has).tolist():
            s.extra.setdefault(int(flat[k]), {})[(int(me[k]), atomic)] = (int(now[k]), site)


__all__ = ["RaceError", "Shadow", "Tracker", "Unit"]
