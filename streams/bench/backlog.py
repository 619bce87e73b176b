"""Timing a stream process over a backlog: how fast it works through records already waiting on its topics, read
from its own Prometheus counter, with its CPU (and its pool's) from Linux /proc. Startup and group join are left out
by timing from the first counted record to the last."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streams.errors import BenchError

POLL_S = 0.05  # a scrape costs the process about a millisecond


@dataclass(frozen=True)
class BacklogRun:
    counted: int  # records counted between the first and the last poll that saw progress
    wall_s: float
    cpu_s: float | None  # the process itself (None off Linux)
    pool_cpu_s: float | None  # its child processes
    startup_s: float  # start -> first counted record: not in wall_s

    @property
    def per_s(self) -> float:
        return self.counted / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def per_cpu_s(self) -> float | None:
        return self.counted / self.cpu_s if self.cpu_s else None


def scrape(port: int) -> dict[str, float]:
    """The process's /metrics page as {sample name: value summed over labels} ({} before it serves)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                out[s.name] = min(out.get(s.name, s.value), s.value)  # the first label's first record
            else:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def time_backlog(
    proc: subprocess.Popen[bytes], log: Path, port: int, counter: str, total: int, *, timeout_s: float
) -> BacklogRun:
    """Poll the process's `counter` (a Prometheus counter, without `_total`) until it reaches `total`. The wall
    time is the process's own: from when it took its first record (`drivecoach_input_records_created`) to when it
    finished its last (`drivecoach_last_record_seconds`); the CPU is sampled from the first poll that saw a record to the end."""
    started = time.monotonic()
    cpu_first: tuple[float, float] | None = None
    while True:
        if proc.poll() is not None:
            raise BenchError(f"the process exited with code {proc.returncode}; see {log}")
        if time.monotonic() - started > timeout_s:
            raise BenchError(f"{counter} short of {total} after {timeout_s:.0f} s; see {log}")
        page = scrape(port)
        count = page.get(f"{counter}_total", 0.0)
        if count > 0 and cpu_first is None:
            cpu_first = tree_cpu_s(proc.pid)
            first_seen = time.monotonic()
        if count >= total:
            cpu_last = tree_cpu_s(proc.pid)
            break
        time.sleep(POLL_S)
    wall = page["drivecoach_last_record_seconds"] - page["drivecoach_input_records_created"]
    cpu = (
        None
        if cpu_first is None or cpu_last is None
        else (cpu_last[0] - cpu_first[0], cpu_last[1] - cpu_first[1])
    )
    return BacklogRun(
        counted=int(count),
        wall_s=wall,
        cpu_s=None if cpu is None else cpu[0],
        pool_cpu_s=None if cpu is None else cpu[1],
        startup_s=first_seen - started,
    )


def tree_cpu_s(pid: int) -> tuple[float, float] | None:
    """User + system CPU seconds of a live process, and of its live descendants, from Linux /proc; None elsewhere."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        stats: dict[int, list[str]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    raw = Path(entry.path, "stat").read_text()
                except OSError:
                    continue  # exited while we looked
                stats[int(entry.name)] = raw[raw.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    except (OSError, ValueError):
        return None
    if pid not in stats:
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, fields in stats.items():
            if int(fields[1]) == parent and child not in tree:
                tree.add(child)
                frontier.append(child)

    def cpu(p: int) -> float:
        return (int(stats[p][11]) + int(stats[p][12])) / tick  # utime, stime

    return cpu(pid), sum(cpu(p) for p in tree - {pid})
