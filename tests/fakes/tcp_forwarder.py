"""A loopback TCP forwarder a test can cut: the database "goes away" for one gateway only.

    with forwarder_process("127.0.0.1", 5432) as forwarder:   # listens on 127.0.0.1:<port 0>
        url = f"postgresql://postgres@127.0.0.1:{forwarder.port}/test"
        forwarder.cut()       # every open connection is closed; new ones are closed at once
        forwarder.restore()   # connections pass again

Cutting keeps the port: the gateway's URL stays valid and it reconnects by itself, as it would
after a database restart or a network partition that heals. :class:`TcpForwarder` is plain
threads and blocking sockets (two per forwarded connection); :func:`forwarder_process` runs it in
a process of its own, driven over stdin, so that relaying bytes never waits for the test
process's GIL (in the test process, a busy client loop slowed every query of the gateway behind
it, and that is what would have been measured).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ACCEPT_POLL_S = 0.05  # the accept loop looks at its stop flag this often
CHUNK = 64 * 1024


class TcpForwarder:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(ACCEPT_POLL_S)
        self.port = int(self._listener.getsockname()[1])
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._up = True
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="tcp-forwarder", daemon=True)

    def __enter__(self) -> TcpForwarder:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._acceptor.join()
        self._listener.close()
        self.cut()

    def cut(self) -> None:
        """Close every forwarded connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._up = False
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target)
        except OSError:
            _close(client)
            return
        with self._lock:
            if not self._up:
                _close(client)
                _close(upstream)
                return
            self._open.update((client, upstream))
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes; then close both."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(CHUNK):
            sink.sendall(chunk)
    _close(source)
    _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@dataclass
class ForwarderControl:
    """The test's handle on a forwarder process: each call returns once the process did it."""

    process: subprocess.Popen[str]
    port: int

    def cut(self) -> None:
        self._command("cut")

    def restore(self) -> None:
        self._command("restore")

    def _command(self, command: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok", f"forwarder: {command} failed"


@contextlib.contextmanager
def forwarder_process(target_host: str, target_port: int) -> Iterator[ForwarderControl]:
    """A :class:`TcpForwarder` in a child process; stopped (stdin closed) at the end."""
    command = [sys.executable, "-m", "tests.fakes.tcp_forwarder", target_host, str(target_port)]
    root = Path(__file__).parents[2]  # where ``tests`` is importable
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
    ) as process:
        try:
            assert process.stdout is not None
            yield ForwarderControl(process, int(process.stdout.readline()))
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(10)


def main() -> None:
    """Print the port, then obey ``cut``/``restore`` lines on stdin (``ok`` after each) until
    stdin closes."""
    host, port = sys.argv[1], int(sys.argv[2])
    with TcpForwarder(host, port) as forwarder:
        print(forwarder.port, flush=True)
        for line in sys.stdin:
            if line.strip() == "cut":
                forwarder.cut()
            elif line.strip() == "restore":
                forwarder.restore()
            print("ok", flush=True)


if __name__ == "__main__":
    main()
