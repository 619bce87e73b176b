"""Running the console: uvicorn in the calling thread, announcing its address once it listens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import uvicorn
from sqlalchemy import Engine

from streams.console.app import create_app
from streams.settings import Settings


def _announce(server: uvicorn.Server, ready: Callable[[str], None]) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        ready(f"http://{host}:{port}")


def serve(settings: Settings, engine: Engine, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); `ready` gets the address (a real port, also for port 0)."""
    config = uvicorn.Config(create_app(settings, engine), host=settings.console_host, port=settings.console_port,
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if ready is not None:
        threading.Thread(target=_announce, args=(server, ready), daemon=True, name="console-ready").start()
    server.run()


__all__ = ["serve"]
