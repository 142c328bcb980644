"""``serve --workers N``: N gateway processes serving one port.

The parent (:class:`Supervisor`) binds the listening socket once (so port 0 works too), starts
the bundled local model once when it is on, and starts N workers, each
``python -m router.workers``: a whole gateway (its own routing table, breakers, decision
caches, audit writer and chain; see docs/configuration.md, "Several workers") that accepts on
the shared socket. Settings reach a worker the way they reach the parent: the same environment,
plus the command line's overrides as JSON in its arguments.

- First start: every worker runs setup, one at a time (the registry's setup lock), so exactly
  one prints a generated admin key; the parent prints ``provenance-router listening on ...``
  once every worker is ready, so after the key.
- Signals: the workers run in a process group of their own, so a terminal's Ctrl-C reaches the
  parent only; on SIGINT or SIGTERM it sends each worker one SIGTERM (drain, flush the audit
  log, exit 0) and waits for all; a second Ctrl-C forces them (uvicorn's force exit). Exit
  status: 0 after SIGTERM, 130 after Ctrl-C, 1 when a worker failed.
- A worker that dies (or fails to start) stops the others: the service ends with status 1 and
  its process manager decides (a gateway never runs with fewer workers than asked, unnoticed).
- A worker whose parent is gone (``kill -9``) sees its stdin close and stops gracefully.
- Metrics: the workers share one ``PROMETHEUS_MULTIPROC_DIR`` (the configured one, emptied of
  a previous run's files, or a temporary one removed at the end), so a scrape of ``/metrics``
  answered by any worker adds up all of them (docs/observability.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from router.settings import Settings

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CTRL_C = 130


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket the workers share (as uvicorn binds its own)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    return sock


class Supervisor:
    """Starts the workers, says once where they listen, stops them together."""

    def __init__(
        self, settings: Settings, overrides: dict[str, Any], *, host: str, port: int, hint: str
    ) -> None:
        self.settings = settings
        self.overrides = overrides
        self.host, self.port, self.hint = host, port, hint
        self.workers: list[subprocess.Popen[bytes]] = []
        self.metrics_dir: Path | None = None  # the workers' shared metric files

    def run(self) -> int:
        """Serve until a stop signal or a worker's death; returns the exit status."""
        sock = listen(self.host, self.port, self.settings.server_backlog)
        local = None
        temporary = self._prepare_metrics_dir()
        try:
            local_url = None
            if self.settings.local_model:
                local, local_url = _start_local_model(self.settings)
            with _Signals() as signals:
                return self._serve(sock, local_url, signals)
        finally:
            sock.close()  # (already closed once the workers started)
            if local is not None:
                local.stop()
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)

    def _prepare_metrics_dir(self) -> Path | None:
        """The workers' metrics directory; returns it when it is a temporary one."""
        if not self.settings.metrics_enabled:
            return None
        configured = self.settings.prometheus_multiproc_dir
        if configured is not None:
            configured.mkdir(parents=True, exist_ok=True)
            for stale in configured.glob("*.db"):  # a previous run's values would add up
                stale.unlink()
            self.metrics_dir = configured
            return None
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="provenance-router-metrics-"))
        return self.metrics_dir

    def _serve(self, sock: socket.socket, local_url: str | None, signals: _Signals) -> int:
        address = sock.getsockname()[:2]
        ready_r, ready_w = os.pipe()
        try:
            for index in range(self.settings.workers):
                self.workers.append(self._spawn(index, sock, ready_w, local_url))
        finally:
            os.close(ready_w)
            sock.close()  # the workers hold it; once they have all stopped, the port is free
        try:
            status = self._watch(address, ready_r, signals)
        finally:
            os.close(ready_r)
        return self._stop_all(status, signals)

    def _spawn(
        self, index: int, sock: socket.socket, ready_w: int, local_url: str | None
    ) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "router.workers", "--index", str(index)]
        command += ["--fd", str(sock.fileno()), "--ready-fd", str(ready_w)]
        command += ["--overrides", json.dumps(self.overrides)]
        if local_url is not None:
            command += ["--local-url", local_url]
        env = None  # inherited
        if self.metrics_dir is not None:  # prometheus_client reads it where it is imported
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        return subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,  # closes when this process dies: the worker stops then
            pass_fds=(sock.fileno(), ready_w),
            process_group=0,  # Ctrl-C reaches the parent only; it stops the workers
        )

    def _watch(self, address: tuple[str, int], ready_r: int, signals: _Signals) -> int:
        """Wait for every worker to be ready (then say where they listen), then for a stop
        signal or a worker's exit. Returns the status to exit with."""
        ready = 0
        with selectors.DefaultSelector() as selector:
            selector.register(ready_r, selectors.EVENT_READ)
            selector.register(signals.fd, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fd == signals.fd:
                        status = self._status_after(signals.read())
                        if status is not None:
                            return status
                        continue
                    data = os.read(ready_r, 4096)  # one line per worker that is ready
                    if not data:
                        selector.unregister(ready_r)
                    ready += data.count(b"\n")
                    if data and ready == len(self.workers):
                        self._announce(address)

    def _status_after(self, received: set[int]) -> int | None:
        """The exit status these signals call for, or None to keep serving."""
        if signal.SIGTERM in received:
            return 0
        if signal.SIGINT in received:
            return EXIT_CTRL_C
        return 1 if self._dead() else None

    def _announce(self, address: tuple[str, int]) -> None:
        host, port = address
        count = len(self.workers)
        print(
            f"provenance-router listening on http://{host}:{port} ({count} workers; {self.hint})",
            flush=True,
        )

    def _dead(self) -> bool:
        for index, worker in enumerate(self.workers):
            code = worker.poll()
            if code is not None:
                print(
                    f"error: worker {index} (pid {worker.pid}) exited with status {code}; "
                    "stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                return True
        return False

    def _stop_all(self, status: int, signals: _Signals) -> int:
        """One SIGTERM to each worker, then wait for all; a Ctrl-C meanwhile forces them."""
        for worker in self.workers:
            _signal(worker, signal.SIGTERM)
        for worker in self.workers:
            while worker.poll() is None:
                if signal.SIGINT in signals.wait(timeout_s=0.5):
                    for other in self.workers:
                        _signal(other, signal.SIGINT)  # uvicorn: a second signal forces exit
            if worker.stdin is not None:
                worker.stdin.close()
            if worker.returncode != 0 and status != 1:
                status = 1
                print(
                    f"error: worker pid {worker.pid} stopped with status {worker.returncode}",
                    file=sys.stderr,
                    flush=True,
                )
        return status


def _signal(worker: subprocess.Popen[bytes], signum: int) -> None:
    if worker.poll() is None:
        worker.send_signal(signum)


def _start_local_model(settings: Settings) -> tuple[Any, str]:
    """One bundled model server for all workers (each would hold ~250 MB and a core)."""
    from adapters.local_llamacpp import DEFAULT_ALIAS as LOCAL_ALIAS
    from adapters.local_llamacpp import LocalModelError, LocalModelServer

    server = LocalModelServer(alias=LOCAL_ALIAS, gguf=settings.local_model_gguf)
    try:
        return server, server.start()
    except LocalModelError as error:
        raise OSError(str(error)) from error


class _Signals:
    """SIGINT, SIGTERM and SIGCHLD as bytes on a pipe (``signal.set_wakeup_fd``), so the
    supervisor waits for them, and for its workers' messages, in one ``select``."""

    WATCHED = (*STOP_SIGNALS, signal.SIGCHLD)

    def __enter__(self) -> _Signals:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_fd = signal.set_wakeup_fd(self._write_fd)
        self._previous = {s: signal.signal(s, _note) for s in self.WATCHED}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self.fd)
        os.close(self._write_fd)

    def read(self) -> set[int]:
        return set(os.read(self.fd, 512))

    def wait(self, *, timeout_s: float) -> set[int]:
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            return self.read() if selector.select(timeout_s) else set()


def _note(signum: int, frame: object) -> None:
    """The handler: the wakeup pipe carries the signal; nothing else to do here."""


# -- a worker process ------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One gateway worker (started by serve).")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--overrides", default="{}")
    parser.add_argument("--local-url", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """A worker: the gateway of ``serve``, accepting on the socket its parent passed."""
    args = _parse_args(argv)
    # uvicorn restores these after its graceful shutdown and re-raises the signal it caught:
    # with them a stopped worker exits 0, not killed by its own SIGTERM.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _note)
    from adapters.local_llamacpp import DEFAULT_ALIAS as LOCAL_ALIAS
    from router.asgi import create_app
    from router.server import server_config, tune_allocator

    settings = Settings(**json.loads(args.overrides))
    tune_allocator(settings)
    local_urls = {LOCAL_ALIAS: args.local_url} if args.local_url else None
    sock = socket.socket(fileno=args.fd)
    config = server_config(create_app(settings, local_urls=local_urls), settings)
    _WorkerServer(config, args.ready_fd).run(sockets=[sock])


class _WorkerServer(uvicorn.Server):
    """uvicorn's server, telling the parent when it is ready and stopping when the parent is
    gone (its end of our stdin closes)."""

    def __init__(self, config: uvicorn.Config, ready_fd: int) -> None:
        super().__init__(config)
        self._ready_fd = ready_fd

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            os.write(self._ready_fd, f"{os.getpid()}\n".encode())
            os.close(self._ready_fd)
            asyncio.get_running_loop().add_reader(sys.stdin.fileno(), self._parent_gone)

    def _parent_gone(self) -> None:
        if not os.read(sys.stdin.fileno(), 4096):  # EOF: the parent went away
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            self.should_exit = True


if __name__ == "__main__":
    main()
