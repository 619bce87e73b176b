"""stop_processes (streams/infra/processes.py): every child gets SIGTERM before any is waited for; one that ignores
it is killed after the grace period."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.infra.processes import stop_processes

# Writes its pid's file when SIGTERM arrives, then exits after the other child has written its own: so it exits
# only if both got SIGTERM before either was waited for.
WAITS_FOR_ITS_PEER = """
import os, signal, sys, time
me, peer = sys.argv[1], sys.argv[2]
def on_term(*_):
    open(me, "w").close()
    while not os.path.exists(peer):
        time.sleep(0.01)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(me + ".ready", "w").close()
while True:
    time.sleep(0.1)
"""

IGNORES_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").close()
while True:
    time.sleep(0.1)
"""


def _wait_for(path: Path) -> None:
    for _ in range(500):
        if path.exists():
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def test_all_children_get_sigterm_before_any_is_waited_for(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [
        subprocess.Popen([sys.executable, "-c", WAITS_FOR_ITS_PEER, str(a), str(b)]),
        subprocess.Popen([sys.executable, "-c", WAITS_FOR_ITS_PEER, str(b), str(a)]),
    ]
    for path in (a, b):
        _wait_for(Path(f"{path}.ready"))
    stop_processes(procs, grace_s=20)
    # One after the other, the first would wait for a peer that had no SIGTERM yet and be killed after 20 s.
    assert [p.returncode for p in procs] == [0, 0]


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM, str(ready)])
    _wait_for(ready)
    stop_processes([proc], grace_s=0.5)
    assert proc.returncode == -signal.SIGKILL
