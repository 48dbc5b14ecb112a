"""The GPU gate: one holder at a time, granted by rank, waiting (bounded) for announced
better-ranked runs, shut while paused, and abandoned cleanly on cancel."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from stablenew.orchestration import gpu_gate
from stablenew.orchestration.gpu_gate import GateCancelled, GpuGate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _rank(priority: int, seconds: int = 0) -> tuple[int, datetime]:
    return (priority, T0 + timedelta(seconds=seconds))


def _run_all(gate: GpuGate, ranks: dict[str, tuple[int, datetime]]) -> list[str]:
    """Start one thread per run (all announced first); return the order they got the GPU."""
    order: list[str] = []
    lock = threading.Lock()
    ids = {name: uuid.uuid4() for name in ranks}
    for name, rank in ranks.items():
        gate.expect(ids[name], rank)

    def worker(name: str) -> None:
        with gate.hold(ids[name], ranks[name], threading.Event()):
            with lock:
                order.append(name)
            time.sleep(0.02)

    threads = [threading.Thread(target=worker, args=(n,)) for n in reversed(list(ranks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return order


def test_grants_by_priority_then_expected_start() -> None:
    order = _run_all(
        GpuGate(),
        {"low-1": _rank(4, 1), "low-0": _rank(4, 0), "urgent": _rank(1, 5), "normal": _rank(3, 2)},
    )
    assert order == ["urgent", "normal", "low-0", "low-1"]


def test_waits_for_an_announced_better_run_but_not_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_gate, "EXPECT_GRACE_SECONDS", 0.5)
    gate = GpuGate()
    urgent, low = uuid.uuid4(), uuid.uuid4()
    gate.expect(urgent, _rank(1))  # claimed, still starting up
    gate.expect(low, _rank(4))
    started = time.monotonic()
    with gate.hold(low, _rank(4), threading.Event()):
        waited = time.monotonic() - started
    assert 0.4 <= waited < 3.0  # held back for the urgent run, then let through


def test_paused_gate_stays_shut_until_resumed() -> None:
    gate = GpuGate()
    gate.set_paused(True)
    got = threading.Event()
    run = uuid.uuid4()

    def worker() -> None:
        with gate.hold(run, _rank(3), threading.Event()):
            got.set()

    t = threading.Thread(target=worker)
    t.start()
    assert not got.wait(0.3)
    gate.set_paused(False)
    assert got.wait(2)
    t.join(2)


def test_cancel_while_waiting_raises_and_leaves_no_trace() -> None:
    gate = GpuGate()
    holder, waiter = uuid.uuid4(), uuid.uuid4()
    cancel = threading.Event()
    errors: list[BaseException] = []
    with gate.hold(holder, _rank(1), threading.Event()):

        def worker() -> None:
            try:
                with gate.hold(waiter, _rank(2), cancel):
                    pass
            except GateCancelled as e:
                errors.append(e)

        t = threading.Thread(target=worker)
        t.start()
        time.sleep(0.1)
        cancel.set()
        t.join(2)
        assert gate.holder == holder
    assert len(errors) == 1
    assert gate.staged() == {}
    assert gate.holder is None


def test_forget_releases_a_holder_that_died() -> None:
    gate = GpuGate()
    run = uuid.uuid4()
    gate.expect(run, _rank(1))
    with gate.hold(run, _rank(1), threading.Event()):
        gate.forget(run)
        assert gate.holder is None


def test_release_inside_the_block_lets_the_next_run_in_at_once() -> None:
    gate = GpuGate()
    first, second = uuid.uuid4(), uuid.uuid4()
    granted = threading.Event()

    def next_run() -> None:
        with gate.hold(second, _rank(1, 1), threading.Event()):
            granted.set()

    with gate.hold(first, _rank(1), threading.Event()):
        waiter = threading.Thread(target=next_run)
        waiter.start()
        assert not granted.wait(0.2)  # still held
        gate.release(first)
        assert granted.wait(2)  # before the first block has ended
        gate.release(first)  # idempotent: does not touch the new holder's turn
        waiter.join(2)
    assert gate.holder is None
