"""Issue 17, finding 8: `drivecoach broker` stopped with SIGTERM left its Tansu child running (and its port bound),
and SIGINT was ignored when it ran as a background job. Every child the project starts now stops with its parent:
on SIGTERM and SIGINT through the broker command's handlers, and on a SIGKILL of the parent through the kernel
(PR_SET_PDEATHSIG, `streams.infra.processes.die_with_parent`)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from streams.infra.broker import free_port

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _background_broker(port: int) -> tuple[subprocess.Popen[bytes], list[psutil.Process]]:
    """`drivecoach broker` as a shell starts a background job: SIGINT ignored from the start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "broker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )
    assert _wait(lambda: _listening(port)), "the broker did not start"
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the broker runs Tansu as a child process"
    return proc, children


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_broker_command_stops_its_broker_on_sigterm_and_sigint(sig: signal.Signals) -> None:
    port = free_port()
    proc, children = _background_broker(port)
    proc.send_signal(sig)
    assert proc.wait(20) == 0 or proc.returncode is not None
    assert _wait(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children))
    assert not _listening(port), "the port is still bound"


def test_a_killed_parent_takes_its_broker_with_it() -> None:
    port = free_port()
    proc, children = _background_broker(port)
    proc.kill()  # no handler runs: only the kernel's parent-death signal can stop the child
    proc.wait(10)
    assert _wait(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children))
    assert _wait(lambda: not _listening(port)), "the port is still bound"
