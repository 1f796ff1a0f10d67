"""CPU time of a set of server processes, read from /proc (Linux), and a sampler of it over time.

A process's CPU time here is ``utime + stime`` from ``/proc/PID/stat``: user
and system time of all its threads, in clock ticks (``SC_CLK_TCK``, 100 a
second on Linux), so one reading is exact to 10 ms per process.

``CpuSampler`` reads the sum for the given processes every
``SAMPLE_SECONDS`` on a thread of its own and answers how much CPU they used
between two past instants of ``time.monotonic()`` (interpolating between the
samples around each).  That lets the benchmark take the window from the load
process's own report after the fact: the measured run ended when the report
arrived and lasted as long as the report says, whatever the process did
before it (start-up, preloading keys) or after it.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

SAMPLE_SECONDS = 0.05
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/PID/stat fields after the command name, which is in parentheses and may
# itself hold spaces and parentheses: field 3 (state) is index 0 there, so
# utime (field 14) is index 11 and stime (field 15) index 12.
_UTIME_INDEX = 11
_STIME_INDEX = 12


class ProcessCpuError(RuntimeError):
    """A process's CPU time could not be read (it exited, or this is not Linux)."""


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads) so far, in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError as exc:
        raise ProcessCpuError(f"cannot read the CPU time of process {pid}: {exc}") from exc
    fields = text[text.rfind(")") + 2 :].split()
    try:
        ticks = int(fields[_UTIME_INDEX]) + int(fields[_STIME_INDEX])
    except (IndexError, ValueError):
        raise ProcessCpuError(f"unexpected /proc/{pid}/stat: {text[:200]!r}") from None
    return ticks / CLOCK_TICKS_PER_SECOND


def total_cpu_seconds(pids: Sequence[int]) -> float:
    """The CPU time of all ``pids`` so far, summed."""
    return sum(process_cpu_seconds(pid) for pid in pids)


class CpuSampler:
    """Samples a CPU reading every ``interval`` seconds while entered; ``between`` answers for past windows.

    ``read`` returns the CPU seconds used so far (``total_cpu_seconds`` of
    the servers, by default); it is called once on entry and once on exit
    too, so every instant between entry and exit lies between two samples.
    """

    def __init__(
        self,
        pids: Sequence[int] = (),
        interval: float = SAMPLE_SECONDS,
        read: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pid_list = list(pids)
        self._read = read if read is not None else (lambda: total_cpu_seconds(pid_list))
        self._clock = clock
        self._interval = interval
        self._times: list[float] = []
        self._values: list[float] = []
        self._error: ProcessCpuError | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server CPU sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is None:
            self.sample()

    def sample(self) -> None:
        """Take one reading now (the thread does this every interval)."""
        try:
            value = self._read()
        except ProcessCpuError as exc:
            with self._lock:
                self._error = self._error or exc
            return
        now = self._clock()
        with self._lock:
            if self._times and now < self._times[-1]:
                return  # the clock is monotonic; a sample racing another keeps the order
            self._times.append(now)
            self._values.append(value)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()
            if self._error is not None:
                return

    def at(self, instant: float) -> float:
        """The CPU reading at ``instant``, interpolated between the samples either side of it."""
        with self._lock:
            if self._error is not None:
                raise self._error
            times, values = list(self._times), list(self._values)
        if not times or instant < times[0] or instant > times[-1]:
            span = f"{times[0]:.3f}..{times[-1]:.3f}" if times else "none"
            raise ProcessCpuError(f"no CPU samples around instant {instant:.3f} (samples cover {span})")
        right = bisect.bisect_left(times, instant)
        if times[right] == instant or right == 0:
            return values[right]
        left = right - 1
        share = (instant - times[left]) / (times[right] - times[left])
        return values[left] + share * (values[right] - values[left])

    def between(self, start: float, end: float) -> float:
        """CPU seconds used from ``start`` to ``end`` (instants of the sampler's clock, both already sampled)."""
        if end < start:
            raise ValueError(f"window ends ({end}) before it starts ({start})")
        return self.at(end) - self.at(start)
