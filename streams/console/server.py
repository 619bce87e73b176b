"""Running the console: uvicorn in the calling thread, announcing its address once it listens."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from sqlalchemy import Engine

from streams.console.app import create_app
from streams.errors import DrivecoachError
from streams.settings import Settings


def _announce(server: uvicorn.Server, ready: Callable[[str], None]) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        ready(f"http://{host}:{port}")


class PortInUse(DrivecoachError):
    """The console's port is taken by another program."""


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve(
    settings: Settings,
    engine: Engine,
    *,
    ready: Callable[[str], None] | None = None,
    any_port_if_taken: bool = False,
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); `ready` gets the address (a real port, also for port 0).

    uvicorn exits the process when it cannot bind, so the port is tried first: a clear error, or (for the demo)
    any free port instead."""
    port = settings.console_port
    if port and not port_free(settings.console_host, port):
        if not any_port_if_taken:
            raise PortInUse(
                f"port {port} on {settings.console_host} is in use; choose another with --port or "
                "DRIVECOACH_CONSOLE_PORT (0 = any free port)"
            )
        port = 0
    config = uvicorn.Config(
        create_app(settings, engine),
        host=settings.console_host,
        port=port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    if ready is not None:
        threading.Thread(target=_announce, args=(server, ready), daemon=True, name="console-ready").start()
    server.run()


__all__ = ["PortInUse", "port_free", "serve"]
