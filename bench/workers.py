"""``serve --workers 1`` vs ``--workers 2``: throughput and latency in front of the mock backend.

One mock backend, the benchmark registry (``bench.seed_registry``, SQLite, default audit mode),
then for each rep and worker count (alternated: 1 2 1 2 ...) a fresh ``provenance-router
serve --workers N --no-local-model``, a 2 s warm-up and a timed closed-loop run of
``bench/loadgen.py`` (keep-alive connections) on non-streamed chat completions. Nothing is
pinned: the workers, the mock and the load generator share the machine's cores, as they would
on one box. The audit rows tell how the requests were spread over the workers (one chain per
process).

    .venv/bin/python bench/workers.py --reps 3 --duration 8 --conc 32 --out /tmp/workers.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
ADMIN_KEY = "pr-bench-workers-admin-0123456789abcdef"
API_KEY = "pr-bench-workers-inference-0123456789ab"
BODY = {"model": "mock", "messages": [{"role": "user", "content": "hello"}]}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_health(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling a server that starts, not a test
    raise RuntimeError(f"{url} did not answer")


def loadgen(url: str, conc: int, duration: float, body_file: str) -> dict[str, Any]:
    command = [PY, os.path.join(HERE, "loadgen.py"), "--url", url, "--conc", str(conc)]
    command += ["--duration", str(duration), "--body-file", body_file, "--auth", API_KEY]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


def share_by_chain(db_url: str) -> list[int]:
    """Requests stored per audit chain (per worker process), largest first."""
    from registry.audit_store import iter_rows
    from registry.db import make_engine

    engine = make_engine(db_url)
    try:
        counts = Counter(row["chain_id"] for row in iter_rows(engine))
    finally:
        engine.dispose()
    return sorted(counts.values(), reverse=True)


def one_run(
    args: argparse.Namespace, workers: int, mock_url: str, body_file: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/registry.db"
        env = {
            **os.environ,
            "PROVENANCE_ROUTER_DATABASE_URL": db_url,
            "PROVENANCE_ROUTER_ADMIN_KEY": ADMIN_KEY,
            "PROVENANCE_ROUTER_SIGNING_KEY_DIR": f"{tmp}/signing",
            "PYTHONPATH": ROOT,
        }
        seed = [PY, "-m", "bench.seed_registry", "--database-url", db_url]
        seed += ["--chat-url", mock_url, "--slow-url", mock_url, "--api-key", API_KEY]
        subprocess.run(seed, env=env, cwd=ROOT, check=True, capture_output=True)
        port = free_port()
        serve = [PY, "-c", "from router.cli import app; app()", "serve", "--no-local-model"]
        serve += ["--workers", str(workers), "--port", str(port)]
        gateway = subprocess.Popen(serve, env=env, cwd=tmp, stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_health(f"{base}/health")
            url = f"{base}/v1/chat/completions"
            loadgen(url, args.conc, 2.0, body_file)  # warm-up
            load_before = os.getloadavg()[0]
            result = loadgen(url, args.conc, args.duration, body_file)
            result["loadavg_1m_before"] = round(load_before, 2)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(60)
        result["workers"] = workers
        result["requests_per_worker"] = share_by_chain(db_url)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--conc", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    mock_port = free_port()
    mock = subprocess.Popen([PY, os.path.join(HERE, "mock_backend.py"), "--port", str(mock_port)])
    runs: list[dict[str, Any]] = []
    try:
        wait_health(f"http://127.0.0.1:{mock_port}/health")
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as body:
            json.dump(BODY, body)
        for rep in range(args.reps):
            for workers in (1, 2):
                run = one_run(args, workers, f"http://127.0.0.1:{mock_port}/v1", body.name)
                run["rep"] = rep
                runs.append(run)
                print(
                    f"rep {rep} workers {workers}: {run['rps']:.0f} req/s, p50 "
                    f"{run['p50_us'] / 1000:.1f} ms, p99 {run['p99_us'] / 1000:.1f} ms, "
                    f"errors {run['err_status'] + run['err_connect']}, per worker "
                    f"{run['requests_per_worker']}, load {run['loadavg_1m_before']}",
                    flush=True,
                )
    finally:
        mock.terminate()
        mock.wait(10)
    summary = {
        str(n): {
            "rps_median": statistics.median(r["rps"] for r in runs if r["workers"] == n),
            "p50_ms_median": statistics.median(r["p50_us"] for r in runs if r["workers"] == n)
            / 1000,
            "p99_ms_median": statistics.median(r["p99_us"] for r in runs if r["workers"] == n)
            / 1000,
        }
        for n in (1, 2)
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"cpus": os.cpu_count(), "conc": args.conc, "runs": runs, "summary": summary},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
