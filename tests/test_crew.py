"""The engine's helper threads (shazip/engine/crew.py): exact tables however the state is used, threads that
stop."""

from __future__ import annotations

import gc
import multiprocessing
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from shazip.engine import Engine
from tests.engine_worker import text_lanes

from .test_engine import run_tables

pytest.importorskip("numba")


@pytest.fixture(scope="module")
def engine(fixture_model_path):  # noqa: ANN201
    """The fixture model on the numba backend (the only one with helper threads) with 2 threads."""
    return Engine(fixture_model_path, backend="numba", threads=2)


def one_thread_tables(engine: Engine, seq: np.ndarray) -> np.ndarray:
    return run_tables(Engine(engine.model, backend="numba", threads=1), seq)


def crew_threads() -> int:
    return sum(t.name == "shazip-lanes" for t in threading.enumerate())


def test_spin_until_sees_another_threads_update() -> None:
    from shazip.engine.crew import spin_until, spins_for

    counter = np.zeros(1, dtype=np.int64)
    assert not spin_until(counter, 1, 1000)  # never reached: gives up
    assert spin_until(counter, 0, 1)
    threading.Timer(0.01, lambda: counter.__setitem__(0, 3)).start()
    assert spin_until(counter, 3, spins_for(5.0))  # returns once the other thread wrote it
    assert counter[0] == 3


def test_helpers_step_exactly_with_the_caller(engine: Engine) -> None:
    seq = text_lanes(44, 45, offset=110000)  # 5 lane groups of 8 or 9: more than the threads, odd
    reference = one_thread_tables(engine, seq)
    np.testing.assert_array_equal(run_tables(engine, seq), reference)
    # steps far apart: the helper stops watching and sleeps between them, then is woken
    state = engine.new_state(44)
    tables = [engine.predict(state)]
    for s in range(6):
        engine.advance(state, seq[s])
        tables.append(engine.predict(state))
        time.sleep(0.01)
    np.testing.assert_array_equal(np.stack(tables), reference[:7])


def advanced(engine: Engine, seq: np.ndarray, steps: int):  # noqa: ANN201
    """A new state of seq's lanes after its first `steps` steps."""
    state = engine.new_state(seq.shape[1])
    for s in range(steps):
        engine.advance(state, seq[s])
    return state


def test_new_arrays_in_a_state_get_new_helpers(engine: Engine) -> None:
    seq = text_lanes(32, 30, offset=130000)
    reference = one_thread_tables(engine, seq)
    state = advanced(engine, seq, 10)
    at_10 = state.copy()
    for s in range(10, 15):
        engine.advance(state, seq[s])  # helpers now bound to this state's arrays
    # the state is given other arrays (step 10's): the old helpers must not step the old ones
    state.h8, state.cell, state.ring, state.written, state.freqs = (
        at_10.h8,
        at_10.cell,
        at_10.ring,
        at_10.written,
        at_10.freqs,
    )
    np.testing.assert_array_equal(run_tables(engine, seq[10:], state), reference[10:])


def test_two_states_stepped_at_once_from_two_threads(engine: Engine) -> None:
    seqs = [text_lanes(16, 30, offset=150000 + 40000 * i) for i in range(2)]
    references = [one_thread_tables(engine, s) for s in seqs]
    results: list = [None, None]

    def run(i: int) -> None:
        results[i] = run_tables(engine, seqs[i])

    callers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    for got, want in zip(results, references, strict=True):
        np.testing.assert_array_equal(got, want)


def test_helpers_stop_with_their_state(engine: Engine) -> None:
    gc.collect()
    before = crew_threads()
    state = engine.new_state(16)
    engine.advance(state, text_lanes(16, 1)[0])
    assert crew_threads() == before + 1
    del state
    gc.collect()
    deadline = time.monotonic() + 5
    while crew_threads() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert crew_threads() == before


def _child_tables(engine: Engine, state, seq: np.ndarray, queue) -> None:  # noqa: ANN001
    queue.put(run_tables(engine, seq, state))


def test_a_forked_child_steps_without_the_parents_threads(engine: Engine) -> None:
    seq = text_lanes(16, 20, offset=180000)
    reference = one_thread_tables(engine, seq)
    state = engine.new_state(16)
    engine.advance(state, seq[0])  # the parent's helper threads exist now; a child has none
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_tables, args=(engine, state, seq[1:], queue))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    np.testing.assert_array_equal(got, reference[1:])


EXIT_SCRIPT = """
import sys, time
import numpy as np
from shazip.engine import Engine
engine = Engine(sys.argv[1], device="cpu", threads=2)

def run():
    state = engine.new_state(64)
    for _ in range(10):
        engine.advance(state, np.arange(64, dtype=np.uint8))
    copy = state.copy()
    for _ in range(5):
        engine.advance(copy, np.arange(64, dtype=np.uint8))

run()  # both states are freed here: their helpers are told to stop and end while the interpreter exits
print("done", flush=True)
time.sleep(0.0001)
"""


def test_the_interpreter_exits_cleanly_while_helpers_end() -> None:
    # A helper thread still ending at interpreter shutdown (it frees the state's arrays as it ends) aborted
    # the process when the arrays were torch tensors: "terminate called without an active exception",
    # status 134. With the shipped model (big arrays: slow to free) this script failed in 2 to 5 of 6 runs
    # before the crew joined every helper thread at exit. (The fixture model's arrays are freed too fast to
    # show it.)
    from shazip.modelfile import default_model_path

    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, str(default_model_path())], capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        assert done.stdout == b"done\n"


def test_stop_all_joins_every_helper(engine: Engine) -> None:
    from shazip.engine import crew

    seq = text_lanes(16, 4, offset=200000)
    reference = one_thread_tables(engine, seq)
    state = engine.new_state(16)
    engine.advance(state, seq[0])
    assert crew_threads() >= 1
    crew._stop_all()
    assert crew_threads() == 0
    # the state stepped after that (by another exit handler, say) gets new helpers instead of waiting
    np.testing.assert_array_equal(run_tables(engine, seq[1:], state), reference[1:])


def test_work_alongside_a_step_runs_once_and_changes_nothing(engine: Engine) -> None:
    # The codec's in-file models learn each byte while the helpers start on the step (`alongside`).
    seq = text_lanes(40, 12, offset=150000)
    reference = one_thread_tables(engine, seq)
    for threads in (2, 1):  # with helpers, and without (it then runs before the step)
        engine = Engine(engine.model, backend="numba", threads=threads)
        state, calls, tables = engine.new_state(40), [], []
        for s in range(12):
            tables.append(engine.predict(state))
            engine.advance(state, seq[s], alongside=lambda s=s, calls=calls: calls.append(s))
        tables.append(engine.predict(state))
        assert calls == list(range(12))
        np.testing.assert_array_equal(np.stack(tables), reference)


def test_a_step_completes_when_the_work_alongside_fails(engine: Engine) -> None:
    seq = text_lanes(40, 6, offset=160000)
    reference = one_thread_tables(engine, seq)
    state = advanced(engine, seq, 3)

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        engine.advance(state, seq[3], alongside=fail)
    np.testing.assert_array_equal(engine.predict(state), reference[4])  # the step was still taken
    engine.advance(state, seq[4])
    np.testing.assert_array_equal(engine.predict(state), reference[5])
