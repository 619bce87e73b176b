"""Issue 17, finding 8: `drivecoach broker` stopped with SIGTERM left its Tansu child running (and its port bound),
and SIGINT was ignored when it ran as a background job. Every child the project starts now stops with its parent:
on SIGTERM and SIGINT through the broker command's handlers, and on a SIGKILL of the parent through the kernel
(PR_SET_PDEATHSIG, `streams.infra.processes.die_with_parent`). The embedded Postgres, a daemon, is stopped by its
watchdog when the last process using it dies, however it died (`streams.infra.embedded_postgres`)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from streams.infra.broker import free_port
from streams.infra.database import embedded_data_dir

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


EMBEDDED_HOLDER = """
import sys, time
from pathlib import Path
from streams.infra.database import resolve_database_url
from streams.settings import Settings
db = resolve_database_url(Settings(home=Path(sys.argv[1]), local_postgres="postgresql+psycopg://postgres@127.0.0.1:1"))
print(db.url.set(drivername="postgresql").render_as_string(hide_password=False), flush=True)
time.sleep(600)
"""


def _embedded_holder(home: Path) -> tuple[subprocess.Popen[str], str]:
    """A process that starts (or joins) the embedded Postgres of `home` and holds it; and the server's URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED_HOLDER, str(home)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def test_a_killed_process_takes_its_embedded_postgres_with_it(tmp_path: Path) -> None:
    """Two processes share the embedded server: a SIGKILL of one leaves it to the other; a SIGKILL of the last
    stops it (before: it ran on, its data directory locked, and no later clean exit stopped it either)."""
    home = tmp_path / "home"
    first, url = _embedded_holder(home)
    second, joined = _embedded_holder(home)
    assert url and joined == url and _answers(url)
    postmaster = psutil.Process(int((embedded_data_dir(home) / "postmaster.pid").read_text().split()[0]))
    try:
        first.kill()
        first.wait(10)
        time.sleep(3)  # six watchdog polls: the first's watchdog has seen it go and pruned it
        assert _answers(url), "the server stopped while another process still used it"
        second.kill()
        second.wait(10)
        assert _wait(lambda: not postmaster.is_running(), 60), "the embedded Postgres outlived its last user"
        assert not _answers(url)
        # The next user starts it again, and its clean exit stops it.
        third, again = _embedded_holder(home)
        assert _answers(again)
        restarted = psutil.Process(int((embedded_data_dir(home) / "postmaster.pid").read_text().split()[0]))
        third.send_signal(signal.SIGINT)  # a clean exit (atexit runs)
        third.wait(10)
        assert _wait(lambda: not restarted.is_running(), 60)
    finally:
        for proc in (first, second):
            proc.kill()
        if postmaster.is_running():
            postmaster.terminate()


VLLM_HOLDER = """
import sys, time
import numpy as np
from streams.inference.engines.vllm import VllmEngine

if __name__ == "__main__":
    engine = VllmEngine(sys.argv[1], max_new_tokens=8)
    answer = engine.run_cot(np.zeros((4, 56, 56, 3), dtype=np.uint8))  # generation works with the signal set
    print("READY", answer.generated_tokens, flush=True)
    time.sleep(600)
"""


def test_a_killed_process_takes_its_vllm_engine_with_it(trained_tiny_model: Path, tmp_path: Path) -> None:
    """A worker (or a test) killed with SIGKILL left vLLM's EngineCore and model worker running, a core pinned
    each, for hours (seen after a killed CI run): vLLM ignores the death of the process that started it. The
    startup shim now gives every vLLM process a parent-death signal (schemas/startup/sitecustomize.py)."""
    script = tmp_path / "holder.py"
    script.write_text(VLLM_HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(trained_tiny_model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    engine_processes: list[psutil.Process] = []
    try:
        ready = next((line.split() for line in proc.stdout if line.startswith("READY")), [])  # vLLM logs too
        assert ready[:1] == ["READY"] and int(ready[1]) > 0, "the engine did not start and answer"
        engine_processes = psutil.Process(proc.pid).children(recursive=True)
        names = {p.name() for p in engine_processes}
        assert {"VLLM::EngineCore", "VLLM::Worker"} <= names, names
        proc.kill()
        proc.wait(10)
        assert _wait(
            lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in engine_processes),
            60,
        ), "vLLM's processes outlived the process that started them"
    finally:
        proc.kill()
        for p in engine_processes:
            if p.is_running():
                p.kill()
