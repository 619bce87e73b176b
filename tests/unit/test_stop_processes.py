"""stop_processes (streams/infra/processes.py): every child gets SIGTERM before any is waited for; one that ignores
it is killed after the grace period."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from streams.infra.processes import stop_processes

# Writes its pid's file when SIGTERM arrives, then exits after the other child has written its own: so it exits
# only if both got SIGTERM before either was waited for.
WAITS_FOR_ITS_PEER = """
import os, signal, sys, time
me, peer = sys.argv[1], sys.argv[2]
def on_term(*_):
    open(me, "w").close()
    while not os.path.exists(peer):  # the peer writes its file when its own SIGTERM arrives: poll for it
        time.sleep(0.01)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    signal.pause()
"""

IGNORES_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    signal.pause()
"""


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    """A child running `script`, returned once it has installed its SIGTERM disposition (its "ready" line)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_all_children_get_sigterm_before_any_is_waited_for(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [_start(WAITS_FOR_ITS_PEER, str(a), str(b)), _start(WAITS_FOR_ITS_PEER, str(b), str(a))]
    stop_processes(procs, grace_s=20)
    # One after the other, the first would wait for a peer that had no SIGTERM yet and be killed after 20 s.
    assert [p.returncode for p in procs] == [0, 0]


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    proc = _start(IGNORES_SIGTERM)
    stop_processes([proc], grace_s=0.5)
    assert proc.returncode == -signal.SIGKILL
