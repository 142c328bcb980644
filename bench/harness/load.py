"""Load generation (wrk with post.lua, or the pure-Python loadgen.py) and RSS sampling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from typing import Any

from bench.harness.config import BODIES, CLIENT_CPU, HERE, PY
from bench.harness.procs import pinnable, rss_mb


class Load:
    def __init__(self, out: str, generator: str) -> None:
        self.out = out
        wrk = shutil.which("wrk")
        if generator == "wrk" and not wrk:
            raise SystemExit("--generator wrk: wrk is not installed (bench/run.py --part setup)")
        self.wrk = wrk if generator in ("auto", "wrk") else None
        self.bodies = {}
        os.makedirs(os.path.join(out, "bodies"), exist_ok=True)
        for kind, body in BODIES.items():
            path = os.path.join(out, "bodies", f"{kind}.json")
            with open(path, "w") as f:
                f.write(json.dumps(body, separators=(",", ":")))
            self.bodies[kind] = path

    @property
    def name(self) -> str:
        return "wrk" if self.wrk else "loadgen.py"

    def run(
        self,
        url: str,
        conc: int,
        seconds: float,
        kind: str,
        auth: str,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        pre = ["taskset", "-c", str(CLIENT_CPU)] if pinnable() and shutil.which("taskset") else []
        lines = [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.wrk:
            env = dict(os.environ, WRK_BODY_FILE=self.bodies[kind], WRK_AUTH=auth)
            env["WRK_HEADERS"] = "\n".join(lines)
            cmd = [
                *pre,
                self.wrk,
                "-t1",
                f"-c{conc}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                os.path.join(HERE, "post.lua"),
                url,
            ]
        else:
            env = dict(os.environ)
            cmd = [
                *pre,
                PY,
                os.path.join(HERE, "loadgen.py"),
                "--url",
                url,
                "--conc",
                str(conc),
                "--duration",
                str(seconds),
                "--body-file",
                self.bodies[kind],
                "--auth",
                auth,
                *(f"--header={line}" for line in lines),
            ]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 90)
        for line in r.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[7:])
                result["errors"] = sum(
                    result[k]
                    for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")
                )
                return result
        raise RuntimeError(
            f"load generator failed rc={r.returncode}: {r.stdout[-500:]} {r.stderr[-800:]}"
        )


class Sampler(threading.Thread):
    """Max RSS of a process tree while a measurement runs (every 0.5 s)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.max_rss, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.max_rss = max(self.max_rss, rss_mb(self.pid))
