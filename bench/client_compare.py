"""The gateway on its own HTTP client (``adapters/http1.py``) against the same gateway on a
Rust-backed client (pyreqwest, through ``bench/reqwest_client.py`` behind the unchanged
``OpenAICompatAdapter``), side by side (issue 16).

    .venv/bin/python bench/client_compare.py [--reps 3] [--duration 8] [--conc 16]

pyreqwest is not a gateway dependency: install it (``pip install pyreqwest==0.15.1``) into the
bench's environment, or point ``BENCH_EXTRA_PATH`` at a site-packages that has it. The mock
backend (``bench/mock_backend.py``) and the load generator (``bench/loadgen.py``, closed loop)
are the benchmark's own; each rep starts a fresh gateway per client, alternating, so drift on a
shared machine hits both. Prints one JSON line: req/s per client and scenario, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def serve_gateway(client: str, backend_url: str, database: str) -> None:
    """The child: a seeded gateway on ``client``; prints its URL and key, then serves."""
    sys.path.insert(0, str(ROOT))
    import router.gateway
    from router.asgi import create_app
    from router.server import tune_allocator
    from router.settings import Settings
    from tests.router.conftest import RunningGateway, deployment, seed
    from tests.servers import serve_app

    if client == "pyreqwest":
        from bench.reqwest_client import ReqwestClient

        router.gateway.make_client = ReqwestClient  # type: ignore[assignment]
    admin = f"pr-bench-admin-{uuid.uuid4().hex}"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        admin_key=admin,
        local_model=False,
        load_catalog=False,
        log_level="error",
    )
    tune_allocator(settings)
    app = create_app(settings)
    with serve_app(app, lifespan="on", settings=settings) as url:
        gw = RunningGateway(app=app, url=url, admin_key=admin)
        seed(gw)
        with gw.write() as w:
            w.create("deployment", deployment("mock-dep", backend_url, timeout_s=30.0))
            w.create("route", {"name": "mock", "candidates": ["mock-dep"]})
        print(json.dumps({"url": url, "key": gw.keys["apps"]}), flush=True)
        threading.Event().wait()


def load(url: str, key: str, body_file: str, conc: int, duration: float) -> float:
    out = subprocess.run(
        [
            PY,
            str(ROOT / "bench" / "loadgen.py"),
            "--url",
            f"{url}/v1/chat/completions",
            "--conc",
            str(conc),
            "--duration",
            str(duration),
            "--body-file",
            body_file,
            "--auth",
            key,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.split("RESULT ", 1)[1])
    if result.get("errors"):
        raise RuntimeError(f"load errors: {result}")
    return float(result["rps"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--conc", type=int, default=16)
    parser.add_argument("--serve", nargs=3, metavar=("CLIENT", "BACKEND_URL", "DATABASE"))
    args = parser.parse_args()
    if args.serve:
        serve_gateway(*args.serve)
        return
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("BENCH_EXTRA_PATH")])
        ),
    }
    port = free_port()
    mock = subprocess.Popen(
        [PY, str(ROOT / "bench" / "mock_backend.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        env=env,
    )
    results: dict[str, dict[str, list[float]]] = {}
    try:
        wait_port(port)
        with tempfile.TemporaryDirectory() as tmp:
            bodies = {}
            for name, stream in (("chat", False), ("stream", True)):
                bodies[name] = f"{tmp}/{name}.json"
                prompt = [{"role": "user", "content": "Say hello."}]
                payload = {"model": "mock", "messages": prompt, "stream": stream}
                Path(bodies[name]).write_text(json.dumps(payload))
            for rep in range(args.reps):
                for client in ("http1", "pyreqwest"):
                    database = f"{tmp}/{client}-{rep}.db"
                    child = subprocess.Popen(
                        [PY, __file__, "--serve", client, f"http://127.0.0.1:{port}/v1", database],
                        stdout=subprocess.PIPE,
                        env=env,
                        cwd=ROOT,
                    )
                    try:
                        assert child.stdout is not None
                        info = json.loads(child.stdout.readline())
                        load(info["url"], info["key"], bodies["chat"], 4, 1.0)  # warm up
                        for name, body_file in bodies.items():
                            rps = load(
                                info["url"], info["key"], body_file, args.conc, args.duration
                            )
                            results.setdefault(client, {}).setdefault(name, []).append(rps)
                    finally:
                        child.kill()
                        child.wait()
    finally:
        mock.kill()
        mock.wait()
    summary = {
        client: {name: round(statistics.median(v), 1) for name, v in scenarios.items()}
        for client, scenarios in results.items()
    }
    ratio = {
        name: round(summary["pyreqwest"][name] / summary["http1"][name], 3)
        for name in summary["http1"]
    }
    print(
        json.dumps(
            {
                "conc": args.conc,
                "duration_s": args.duration,
                "reps": args.reps,
                "runs": results,
                "median_rps": summary,
                "pyreqwest_over_http1": ratio,
            }
        )
    )


if __name__ == "__main__":
    main()
