"""The pipeline's own processes (joiner, worker) started as `drivecoach` child processes by the demo, the
benchmarks and the tests, configured through the environment so each builds the very same Settings."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as DRIVECOACH_* variables, so child processes build the very same object."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = value.resolve()
        env[f"DRIVECOACH_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """`preexec_fn` for every child the project starts: the kernel sends it SIGTERM when its parent dies, even of
    a SIGKILL, so no broker or pipeline process outlives what started it (Linux; elsewhere a no-op). The signal
    follows the parent *thread*: start children from a thread that lives as long as they should."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_command(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`drivecoach ARGS...` in a child process, its output to `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only async-signal-safe work: one prctl call
        )


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`: a joiner or worker commits what it has durably written on SIGTERM."""
    stop_processes([proc], grace_s=grace_s)


def stop_processes(procs: list[subprocess.Popen[bytes]], *, grace_s: float = 30.0) -> None:
    """`stop_process` for several at once: all get SIGTERM first, so they shut down side by side (the demo's three
    took 1-2.5 s each, one after the other)."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.terminate()
    for proc in running:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
