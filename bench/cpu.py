"""CPU time per process during a benchmark run: where the time goes, whatever else the machine
is doing. On a machine with N cores, N / (CPU seconds per job) bounds jobs/s."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _pids_named(names: Iterable[str]) -> dict[int, str]:
    wanted = tuple(names)
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        for name in wanted:
            if comm.startswith(name):
                found[int(entry.name)] = name
    return found


@dataclass
class CpuMeter:
    """Sums CPU seconds by label between start() and stop(): the given pids, plus every process
    whose command name starts with one of `services` (e.g. the broker's and database's)."""

    pids: Mapping[str, int]
    services: tuple[str, ...] = ("beam.smp", "postgres")
    spent: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> None:
        self.spent = {}
        for (pid, label), seconds in self._sample().items():
            used = seconds - self._before.get((pid, label), 0.0)
            self.spent[label] = self.spent.get(label, 0.0) + used

    def _sample(self) -> dict[tuple[int, str], float]:
        labelled = {pid: label for label, pid in self.pids.items()}
        labelled |= {pid: name for pid, name in _pids_named(self.services).items()}
        samples = {}
        for pid, label in labelled.items():
            try:
                samples[(pid, label)] = cpu_seconds(pid)
            except OSError:
                continue  # ended between listing and reading
        return samples


def wait_quiet(pid: int, busy: float = 0.05, window: float = 0.5, limit: float = 30.0) -> None:
    """Returns once process `pid` used less than `busy` of a core over `window` seconds (or
    after `limit` seconds): the work left from the run before has finished."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < busy * window:
            return
