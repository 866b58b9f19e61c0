"""Helper threads that step an engine state's lane groups beside the calling thread (numba CPU path).

Why not a thread pool: a step of 64 lanes takes about 2 ms on a 2-core machine, and every hand-over
through a thread pool wakes a sleeping thread and passes the GIL twice, which costs a tenth of such a
step and leaves one thread idle at its end. A LaneCrew's helpers never need the GIL between steps: each
sits in one compiled call (`_serve`) that watches a step counter, steps the lane groups it claims
(`kernels.step_groups`, the same call as the calling thread's) and counts itself finished, and the caller
waits by watching that count.

The watching is bounded (threads that busy-wait without bound collapse when another process takes a
core: docs/design.md) and yields the core as it goes (`sched_yield`, so a thread of ours that the OS put
on the same core gets to run). A helper that sees no step for SPIN_SECONDS returns from its compiled call
and sleeps on a condition variable; a caller whose helpers take longer polls with short sleeps.

A crew belongs to one engine state (its arrays are bound into the helpers' call) and one model; the
engine makes a new one when either changes, and stops the old one's threads.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from shazip import _numba_cache
from shazip.engine.kernels import claim, group_bounds, step_groups

SPIN_SECONDS = 0.002  # how long a thread watches a counter before it sleeps (> a lane group's step)
YIELD_EVERY = 64  # watch iterations between two sched_yield calls
POLL_SECONDS = 0.0002  # the caller's sleep between checks once its watching ran out
_X86 = llvm_binding.get_process_triple().split("-")[0] in ("x86_64", "i386", "i686")


# ---- watching a counter without the GIL ----


@intrinsic
def _load_acquire(typingctx, counter):  # noqa: ANN001, ANN202, ARG001 - a numba intrinsic
    """counter[0] (int64 array) read with acquire ordering: what the writer stored before its update is
    visible after the read sees the update."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.bitcast(arr.data, ir.IntType(64).as_pointer()), "acquire", 8)

    return types.int64(counter), codegen


@intrinsic
def _relax(typingctx):  # noqa: ANN001, ANN202, ARG001 - a numba intrinsic
    """The CPU's spin-wait hint (x86 `pause`); nothing elsewhere."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=fnty), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _sched_yield(typingctx):  # noqa: ANN001, ANN202, ARG001 - a numba intrinsic
    """libc's sched_yield(): another runnable thread on this core may run."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        fn = builder.module.globals.get("sched_yield")
        if fn is None:
            fn = ir.Function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, cache=True)
def spin_until(counter, target: int, spins: int) -> bool:  # noqa: ANN001
    """Watch counter[0] (without the GIL) until it reaches target, for at most `spins` iterations.
    True if it did."""
    for i in range(spins):
        if _load_acquire(counter) >= target:
            return True
        _relax()
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            _sched_yield()
    return _load_acquire(counter) >= target


_spins_per_second: float | None = None


def spins_for(seconds: float) -> int:
    """About how many spin_until iterations take `seconds` here (measured once: `pause` costs from ~10
    to ~140 cycles depending on the CPU, sched_yield depends on the kernel)."""
    global _spins_per_second
    if _spins_per_second is None:
        never = np.zeros(1, dtype=np.int64)
        spin_until(never, 1, 1)  # (compiled before it is timed)
        n = 20_000
        start = time.perf_counter()
        spin_until(never, 1, n)
        _spins_per_second = n / max(time.perf_counter() - start, 1e-9)
    return max(1, int(seconds * _spins_per_second))


# ---- the crew ----


@njit(nogil=True, cache=True)
def _serve(counters, seen, spins, x, cuts, groups, claimed, model, state):  # noqa: ANN001, ANN201
    """A helper's loop: for each step posted after the `seen`-th, take lane groups with the caller
    (step_groups) and count this helper finished. counters: (posted, finished, stop); model: (blocks,
    head); state: (h8, cell, ring, written, freqs). Returns the number of steps seen when no step came
    within `spins` or when stop[0] is set."""
    posted, finished, stop = counters
    while True:
        if not spin_until(posted, seen + 1, spins):
            return seen
        seen += 1
        if _load_acquire(stop):
            return seen
        h8, cell, ring, written, freqs = state
        step_groups(x, cuts[: groups[0] + 1], claimed, model[0], model[1], h8, cell, ring, written, freqs)
        claim(finished)  # (atomic: several helpers may finish at once)


class LaneCrew:
    """`helpers` threads that step lane groups of one engine state with the calling thread.

    model: step_group's (blocks, head) arguments (`kernels.plain_params`); state: (h8, cell, ring,
    written, freqs), the state's numpy views. Lanes: the state's lane count."""

    def __init__(self, helpers: int, lanes: int, model: tuple, state: tuple) -> None:
        self.helpers = helpers
        self.posted = np.zeros(1, dtype=np.int64)  # steps posted so far
        self.finished = np.zeros(1, dtype=np.int64)  # helper-steps finished so far
        self.stop = np.zeros(1, dtype=np.int64)
        self.x = np.zeros(lanes, dtype=np.int64)  # this step's bytes, ...
        self.cuts = np.zeros(lanes + 2, dtype=np.int64)  # ... its lane groups' bounds ...
        self.groups = np.zeros(1, dtype=np.int64)  # ... and their number
        self.claimed = np.zeros(1, dtype=np.int64)  # groups taken so far in this step
        self.wake = threading.Condition()
        self.spins = spins_for(SPIN_SECONDS)
        self.error: BaseException | None = None
        self._model, self._state = model, state
        self.threads = [
            threading.Thread(target=self._helper, name="shazip-lanes", daemon=True) for _ in range(helpers)
        ]
        for t in self.threads:
            t.start()
        _LIVE.add(self)
        _THREADS[:] = [t for t in _THREADS if t.is_alive()] + self.threads

    def _helper(self) -> None:
        seen = 0
        counters = (self.posted, self.finished, self.stop)
        args = (self.x, self.cuts, self.groups, self.claimed, self._model, self._state)
        try:
            while not self.stop[0]:
                seen = _serve(counters, seen, self.spins, *args)
                with self.wake:  # no step for a while: sleep until one is posted
                    while self.posted[0] <= seen and not self.stop[0]:
                        self.wake.wait()
        except BaseException as e:  # noqa: BLE001 - the caller raises it (a helper has no one else to tell)
            self.error = e

    def step(self, x: np.ndarray, groups: int, alongside: Callable[[], object] | None = None) -> None:
        """Lanes 0..len(x)-1 consume x, cut into `groups` lane groups taken by this thread and the
        helpers; returns when all are done. `alongside` (work that does not touch the state) runs on this
        thread after the helpers were woken and before it takes groups itself; the step completes even
        when it raises."""
        k = len(x)
        self.x[:k] = x
        self.cuts[: groups + 1] = group_bounds(k, groups)
        self.groups[0] = groups
        self.claimed[0] = 0
        target = int(self.finished[0]) + self.helpers
        with self.wake:
            self.posted[0] += 1
            self.wake.notify_all()
        try:
            if alongside is not None:
                alongside()
        finally:
            step_groups(self.x, self.cuts[: groups + 1], self.claimed, *self._model, *self._state)
            self._wait(target)

    def _wait(self, target: int) -> None:
        """Until the helpers' finished count reaches target."""
        if spin_until(self.finished, target, self.spins):
            return
        while self.finished[0] < target:  # helpers slower than the watch: the OS gave their cores away
            if self.error is not None:
                raise RuntimeError("an engine helper thread failed") from self.error
            if self.closed:
                raise RuntimeError("the engine's helper threads were stopped during a step")
            time.sleep(POLL_SECONDS)

    @property
    def closed(self) -> bool:
        return bool(self.stop[0])

    def close(self) -> None:
        """Stop the helpers (they return within a watch or at once if asleep). Does not wait for them:
        it may run in a finalizer, on any thread."""
        self.stop[0] = 1
        with self.wake:
            self.posted[0] += 1
            self.wake.notify_all()


_LIVE: weakref.WeakSet[LaneCrew] = weakref.WeakSet()  # crews not yet collected
_THREADS: list[threading.Thread] = []  # every helper thread that may still run (also of collected crews)


@atexit.register
def _stop_all() -> None:
    """Stop every crew and join every helper thread before the interpreter shuts down. A helper thread
    that is still ending then (it drops the last references to the state's torch-backed arrays as it
    ends, e.g. when its state was collected just before exit) re-takes the GIL inside torch's C++
    deallocator, is ended there by pthread_exit, and the unwinding aborts the process ("terminate called
    without an active exception", exit status 134: seen in most runs of the test's script)."""
    for crew in list(_LIVE):
        crew.close()
    for t in list(_THREADS):
        t.join(timeout=5)


# numba's cache does not notice changes in compiled code called from other files: see _numba_cache.
_numba_cache.drop_stale(_serve)
