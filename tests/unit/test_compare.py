"""The side-by-side benchmark's CPU accounting and report, with plain calls.

The short smoke run of both paxoskv paths is tests/processes/test_compare.py."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from benchmarks.compare import cpu_fields, ratio_table
from benchmarks.server_cpu import CpuSampler, ProcessCpuError, process_cpu_seconds
from tests.harness.polling import wait_until

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")


class _FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sampler_interpolates_between_the_samples_around_each_end_of_a_window() -> None:
    clock = _FakeClock()
    readings = iter([10.0, 12.0, 20.0])
    sampler = CpuSampler(read=lambda: next(readings), clock=clock)
    for instant in (0.0, 1.0, 2.0):
        clock.now = instant
        sampler.sample()
    assert sampler.at(0.5) == pytest.approx(11.0)
    assert sampler.at(1.0) == pytest.approx(12.0)
    assert sampler.between(0.5, 1.5) == pytest.approx(16.0 - 11.0)
    with pytest.raises(ProcessCpuError, match="no CPU samples"):
        sampler.at(2.5)
    with pytest.raises(ValueError, match="before it starts"):
        sampler.between(1.5, 0.5)


def test_sampler_reports_a_process_it_cannot_read() -> None:
    def unreadable() -> float:
        raise ProcessCpuError("process 1234 exited")

    sampler = CpuSampler(read=unreadable)
    sampler.sample()
    with pytest.raises(ProcessCpuError, match="exited"):
        sampler.at(0.0)


def test_cpu_per_operation_is_not_a_number_when_nothing_completed() -> None:
    assert cpu_fields(0.5, 1000) == {"server_cpu_seconds": 0.5, "server_cpu_us_per_op": 500.0}
    assert math.isnan(cpu_fields(0.5, 0)["server_cpu_us_per_op"])


def test_ratio_table_puts_each_paxoskv_path_beside_etcd() -> None:
    def row(system: str, op: str, clients: int, ops_per_sec: float, cpu: float) -> dict[str, object]:
        return {"system": system, "op": op, "clients": clients, "ops_per_sec": ops_per_sec, "p50_ms": 2.0,
                "p99_ms": 10.0, "server_cpu_us_per_op": cpu}  # fmt: skip

    results = [
        row(system, op, clients, rate, cpu)
        for system, rate, cpu in (("etcd", 1000.0, 400.0), ("paxoskv", 2500.0, 200.0), ("paxoskv-unary", 500.0, 800.0))
        for op in ("set", "get")
        for clients in (1, 64)
    ]
    table = "\n".join(ratio_table(results))
    assert "| measure (paxoskv / etcd) | paxoskv | paxoskv-unary | goal |" in table
    assert "| writes/s at 64 clients | **2.50x** (2500 / 1000 ops/s) | **0.50x** (500 / 1000 ops/s) |" in table
    assert "| server CPU per write at 64 clients | **0.50x** (200 / 400 us) | **2.00x** (800 / 400 us) |" in table
    assert ratio_table([r for r in results if r["system"] != "etcd"]) == [
        "No ratios: paxoskv and etcd were not both measured."
    ]


@linux_only
def test_process_cpu_time_from_proc_follows_the_process_own_count() -> None:
    before = process_cpu_seconds(os.getpid())

    def burned() -> bool:
        sum(i * i for i in range(20_000))
        return process_cpu_seconds(os.getpid()) >= before + 0.05

    wait_until(burned, "this process's /proc CPU time to grow by 50 ms", timeout=60)
    own = os.times()
    assert process_cpu_seconds(os.getpid()) <= own.user + own.system + 0.02  # /proc's ticks, never more than ours
    with pytest.raises(ProcessCpuError, match="cannot read"):
        process_cpu_seconds(2**22 + 1)  # above the kernel's largest pid
