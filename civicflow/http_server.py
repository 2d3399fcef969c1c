"""An HTTP app served inside a service's process (the bridge's webhooks, the notifier's telephony endpoint):
a task for ServiceProcess.tasks that runs until the process's stop event is set."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import structlog
import uvicorn
from starlette.applications import Starlette

log = structlog.get_logger(__name__)


class _InProcessServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service process owns SIGTERM/SIGINT (civicflow.runtime.serve); it stops us via should_exit.
        yield


class InProcessHttpServer:
    """Serves `app` on host:port until the stop event is set. `what` names it in logs ("webhook server");
    `port_setting` is the setting a taken port should be changed with."""

    def __init__(self, app: Starlette, host: str, port: int, what: str, port_setting: str) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._what = what
        self._port_setting = port_setting

    async def __call__(self, stop: asyncio.Event) -> None:
        # Bind first ourselves: uvicorn would sys.exit() on a taken port, taking the whole process down
        # without saying which setting to change.
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and a socket
        # made with proto 0 passes 0 on, so every response waited ~40 ms for the client's delayed ACK (Nagle).
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            log.error(f"{self._what} port unavailable; set {self._port_setting}", port=self._port, error=str(exc))
            stop.set()
            raise
        server = _InProcessServer(uvicorn.Config(self._app, log_config=None, access_log=False, lifespan="off"))
        serving = asyncio.create_task(server.serve(sockets=[sock]), name=self._what)
        log.info(f"{self._what} listening", host=self._host, port=self._port)
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            server.should_exit = True
            stopping.cancel()
            try:
                await serving
            except Exception:
                log.exception(f"{self._what} failed")
            finally:
                sock.close()
        if not stop.is_set():  # it ended on its own: the process cannot take these requests any more
            log.error(f"{self._what} stopped unexpectedly; stopping the service")
            stop.set()
