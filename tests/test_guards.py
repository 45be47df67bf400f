"""Guard decisions with plain numbers for time and memory: no processes, no sleeping."""

from __future__ import annotations

import pytest

from arbiter.config.convert import to_size
from arbiter.master.guards import Autoscaler, MemoryGuard

MiB = 1 << 20


@pytest.mark.parametrize(("raw", "size"), [(150, 150 * MiB), ("512MB", 512 * MiB), ("1GB", 1 << 30),
                                           ("200KB", 200 << 10), ("0", 0), ("1.5g", 3 << 29)])
def test_one_size_parser_with_memmons_units(raw: object, size: int) -> None:
    assert to_size(raw) == size


@pytest.mark.parametrize("raw", ["lots", "12TB", "-5", True, None])
def test_bad_sizes_say_what_was_expected(raw: object) -> None:
    with pytest.raises(ValueError, match="size"):
        to_size(raw)


def test_three_samples_in_a_row_over_the_limit_replace_a_worker_once() -> None:
    guard = MemoryGuard(limit=100 * MiB)
    assert guard.observe({1: 150 * MiB, 2: 50 * MiB}) == []
    assert guard.observe({1: 150 * MiB, 2: 50 * MiB}) == []
    [action] = guard.observe({1: 150 * MiB, 2: 50 * MiB})
    assert (action.pid, action.reason) == (1, "memory")
    assert "150.0 MiB" in action.message and "100.0 MiB" in action.message
    assert guard.observe({1: 160 * MiB, 2: 50 * MiB}) == []  # already being replaced


def test_a_dip_under_the_limit_starts_the_count_again() -> None:
    guard = MemoryGuard(limit=100 * MiB)
    for size in (150, 150, 90, 150, 150):
        assert guard.observe({1: size * MiB}) == []
    assert guard.observe({1: 150 * MiB})


def test_a_zero_limit_is_off() -> None:
    guard = MemoryGuard(limit=0)
    assert all(guard.observe({1: 10 << 30}) == [] for _ in range(5))


def test_a_saturated_pool_grows_one_worker_a_second_up_to_the_ceiling() -> None:
    scaler = Autoscaler(floor=1, ceiling=3)
    workers, decisions = 1, []
    for tick in range(50):  # 5 s of samples every 100 ms, every worker busy
        decision = scaler.observe(tick / 10, 1.0, 0, workers)
        if decision:
            workers += decision.delta
            decisions.append((tick / 10, decision.delta))
    assert decisions == [(0.0, 1), (1.0, 1)]
    assert workers == 3


def test_a_listen_backlog_alone_means_saturated() -> None:
    scaler = Autoscaler(floor=1, ceiling=4)
    decision = scaler.observe(0.0, 0.2, 5, 1)
    assert decision and decision.delta == 1 and "5 connections waiting" in decision.message


def test_a_quiet_pool_shrinks_after_idle_after_seconds_never_below_the_floor() -> None:
    scaler = Autoscaler(floor=2, ceiling=8, idle_after=3)
    workers, removed_at = 5, []
    for tick in range(100):
        decision = scaler.observe(tick / 10, 0.1, 0, workers)
        if decision:
            workers += decision.delta
            removed_at.append(tick / 10)
    assert removed_at == [3.0, 4.0, 5.0]
    assert workers == 2


def test_a_spike_during_idle_resets_the_idle_clock() -> None:
    scaler = Autoscaler(floor=1, ceiling=2, idle_after=3)
    for tick in range(25):
        assert scaler.observe(tick / 10, 0.1, 0, 2) is None
    for tick in range(25, 31):  # a burst: the mean over the last second goes over `low`
        assert scaler.observe(tick / 10, 1.0, 0, 2) is None
    assert all(scaler.observe(tick / 10, 0.1, 0, 2) is None for tick in range(31, 60))
    assert scaler.observe(7.0, 0.1, 0, 2) is not None  # idle again for 3 s since the mean fell
