"""The servers under test, started and validated the same way for every part: Target and Bench."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import time
from typing import Any

from bench.harness.config import (
    ALL_TARGETS,
    CLIENT_CPU,
    DROP,
    ENDPOINT,
    HERE,
    PY,
    REQUIRED_TARGETS,
    ROOT,
    SERVER_CPU,
    log,
)
from bench.harness.procs import Proc, Runner, free_port, hwm_mb, rss_mb, wait_ready
from bench.harness.tools import install_portkey, portkey_entry, setup_tools, tool


def gateway_argv(port: int) -> list[str]:
    """The gateway as a benchmark runs it: uvicorn with the app factory, uvloop, httptools."""
    return [
        PY,
        "-m",
        "uvicorn",
        "--factory",
        "router.asgi:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        "on",
    ]


class Target:
    def __init__(
        self,
        name: str,
        proc: Proc | None,
        base: str,
        auth: str,
        startup_s: float | None = None,
        headers: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.name, self.proc, self.base, self.auth = name, proc, base, auth
        self.startup_s = startup_s
        self.idle_rss: float | None = None
        self.headers_by_kind = headers or {}

    def url(self, kind: str) -> str:
        return self.base + ENDPOINT[kind]

    def headers(self, kind: str) -> dict[str, str]:
        """Extra request headers for this kind of request (Portkey's provider and host)."""
        return self.headers_by_kind.get(kind, {})


class Bench:
    def __init__(self, args: argparse.Namespace, part: str) -> None:
        self.args, self.part, self.out = args, part, args.out
        os.makedirs(self.out, exist_ok=True)
        self.runner = Runner(self.out, part)
        self.key = "sk-bench-" + secrets.token_hex(24)
        self.admin_key = "sk-admin-" + secrets.token_hex(24)
        self.meta: dict[str, Any] = {
            "part": part,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "config": {
                "duration": args.duration,
                "warmup": args.warmup,
                "reps": args.reps,
                "chunks": args.chunks,
                "delay_ms": 50,
                "targets": args.targets,
                "server_cpu": SERVER_CPU,
                "client_cpu": CLIENT_CPU,
                "smoke": args.smoke,
            },
            "startup_s": {},
            "rss_idle_mb": {},
            "checks": {},
        }
        self.results: list[dict[str, Any]] = []
        self.mock: Proc | None = None
        self.mock_slow: Proc | None = None
        self.targets: dict[str, Target] = {}
        self.start_failures: dict[str, str] = {}

    # -- servers
    def start_mocks(self) -> None:
        self.p_mock, self.p_slow = free_port(), free_port()
        argv = [PY, os.path.join(HERE, "mock_backend.py"), "--chunks", str(self.args.chunks)]
        self.mock = self.runner.start("mock", [*argv, "--port", str(self.p_mock)], CLIENT_CPU)
        self.mock_slow = self.runner.start(
            "mock_slow", [*argv, "--port", str(self.p_slow), "--delay-ms", "50"], CLIENT_CPU
        )
        wait_ready(self.runner, self.mock, f"http://127.0.0.1:{self.p_mock}/health")
        wait_ready(self.runner, self.mock_slow, f"http://127.0.0.1:{self.p_slow}/health")
        self.targets["direct"] = Target(
            "direct", self.mock, f"http://127.0.0.1:{self.p_mock}", self.key
        )

    def mock_for(self, kind: str) -> Proc:
        assert self.mock and self.mock_slow
        return self.mock_slow if kind == "slow" else self.mock

    def target_url(self, target: Target, kind: str) -> str:
        if target.name == "direct" and kind == "slow":
            return f"http://127.0.0.1:{self.mock_port(kind)}" + ENDPOINT[kind]
        return target.url(kind)

    def seed_gateway(self, db_path: str) -> dict[str, Any]:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(db_path + suffix)
        cmd = [
            PY,
            "-m",
            "bench.seed_registry",
            "--database-url",
            f"sqlite:///{db_path}",
            "--chat-url",
            f"http://127.0.0.1:{self.p_mock}/v1",
            "--slow-url",
            f"http://127.0.0.1:{self.p_slow}/v1",
            "--api-key",
            self.key,
            "--admin-key",
            self.admin_key,
        ]
        t0 = time.perf_counter()
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
            env=self.gateway_env(db_path),
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"seeding the registry failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
            )
        summary: dict[str, Any] = json.loads(r.stdout)
        summary["seed_wall_s"] = round(time.perf_counter() - t0, 2)
        return summary

    def gateway_env(self, db_path: str) -> dict[str, str]:
        return {
            "PROVENANCE_ROUTER_DATABASE_URL": f"sqlite:///{db_path}",
            "PROVENANCE_ROUTER_LOCAL_MODEL": "false",
            "PROVENANCE_ROUTER_ADMIN_KEY": self.admin_key,
            "PROVENANCE_ROUTER_LOG_LEVEL": "warning",
            # receipts are signed with a key of the run's own, never the user's data dir
            "PROVENANCE_ROUTER_SIGNING_KEY_DIR": os.path.join(os.path.dirname(db_path), "signing"),
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }

    def start_gateway(self, name: str = "gateway") -> Target:
        db = os.path.join(self.out, f"gateway-{self.part}.db")
        if "gateway_seed" not in self.meta:
            self.meta["gateway_seed"] = self.seed_gateway(db)
            log(
                "registry seeded:",
                json.dumps(
                    {
                        k: self.meta["gateway_seed"][k]
                        for k in ("counts", "policy_rules", "seed_wall_s")
                    }
                ),
            )
        self.gateway_db = db
        port = free_port()
        # cwd = the output dir: no stray provenance-router.env is picked up
        proc = self.runner.start(
            name, gateway_argv(port), SERVER_CPU, env=self.gateway_env(db), cwd=self.out
        )
        startup = wait_ready(self.runner, proc, f"http://127.0.0.1:{port}/health")
        return Target(name, proc, f"http://127.0.0.1:{port}", self.key, startup)

    def start_raw(self, name: str = "raw-asgi") -> Target:
        port = free_port()
        env = {
            "UPSTREAM_DEFAULT": f"http://127.0.0.1:{self.p_mock}",
            "UPSTREAMS": f"mock=http://127.0.0.1:{self.p_mock},"
            f"mock-slow=http://127.0.0.1:{self.p_slow}",
            "PASSTHROUGH_CLIENT": "http1" if name == "raw-http1" else "aiohttp",
        }
        proc = self.runner.start(
            name,
            [PY, os.path.join(HERE, "passthrough_raw.py"), "--port", str(port)],
            SERVER_CPU,
            env=env,
        )
        startup = wait_ready(self.runner, proc, f"http://127.0.0.1:{port}/health")
        return Target(name, proc, f"http://127.0.0.1:{port}", self.key, startup)

    def start_litellm(self) -> Target:
        if not os.path.exists(tool("litellm")):
            setup_tools()
        port = free_port()
        with open(os.path.join(HERE, "litellm_config.template.yaml")) as f:
            cfg = f.read().replace("__MOCK_PORT__", str(self.p_mock))
        cfg = cfg.replace("__MOCK_SLOW_PORT__", str(self.p_slow))
        path = os.path.join(self.out, "litellm_config.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        env = {
            "LITELLM_MASTER_KEY": self.key,
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "JSON_LOGS": "False",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_ADMIN_UI": "True",
            "DATABASE_URL": DROP,
            "REDIS_HOST": DROP,
            "REDIS_URL": DROP,
        }
        argv = [
            tool("litellm"),
            "--config",
            path,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        proc = self.runner.start("litellm", argv, SERVER_CPU, env=env, cwd=self.out)
        startup = wait_ready(self.runner, proc, f"http://127.0.0.1:{port}/health/liveliness")
        return Target("litellm", proc, f"http://127.0.0.1:{port}", self.key, startup)

    def start_portkey(self) -> Target:
        """Portkey's gateway on Node, headless, told per request where the backend is
        (``x-portkey-custom-host``); bound to loopback by ``portkey_loopback.cjs``."""
        install_portkey(self.out)  # once per output dir (the setup part's, when it ran)
        port = free_port()
        argv = ["node", "--require", os.path.join(HERE, "portkey_loopback.cjs")]
        argv += [portkey_entry(self.out), f"--port={port}", "--headless"]
        proc = self.runner.start("portkey", argv, SERVER_CPU, cwd=self.out)
        startup = wait_ready(self.runner, proc, f"http://127.0.0.1:{port}/")
        headers = {
            kind: {
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": f"http://127.0.0.1:{self.mock_port(kind)}/v1",
            }
            for kind in ENDPOINT
        }
        return Target("portkey", proc, f"http://127.0.0.1:{port}", self.key, startup, headers)

    def mock_port(self, kind: str) -> int:
        return self.p_slow if kind == "slow" else self.p_mock

    def start_targets(self) -> None:
        self.start_mocks()
        starters = {
            "gateway": self.start_gateway,
            "raw-asgi": self.start_raw,
            "raw-http1": lambda: self.start_raw("raw-http1"),
            "litellm": self.start_litellm,
            "portkey": self.start_portkey,
        }
        for name in (n for n in self.args.targets if n in starters):
            try:
                t = starters[name]()
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                if name in REQUIRED_TARGETS:
                    raise
                self.record_start_failure(name, error)
                continue
            self.targets[name] = t
            self.meta["startup_s"][name] = round(t.startup_s or 0, 3)
            log(f"{name} ready in {t.startup_s:.3f}s")
        time.sleep(2 if not self.args.smoke else 0.5)
        for name, t in self.targets.items():
            if t.proc is not None:
                t.idle_rss = round(rss_mb(t.proc.pid), 1)
                self.meta["rss_idle_mb"][name] = t.idle_rss

    def record_start_failure(self, name: str, error: Exception) -> None:
        """A peer that does not start (no node, an install that failed, a crash) is recorded
        as failing the check of every kind of request, so each of its cells says why."""
        text = f"did not start: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
        self.start_failures[name] = text
        for kind in ENDPOINT:
            self.meta["checks"][f"{name}/{kind}"] = {"error": text}
        log(name, text)

    def measured_targets(self) -> list[str]:
        """The targets a measured part has cells for, in the table's order."""
        return [n for n in ALL_TARGETS if n in self.targets or n in self.start_failures]

    def finish(self) -> None:
        self.meta["rss_after_load_mb"] = {}
        self.meta["rss_peak_hwm_mb"] = {}
        for name, t in self.targets.items():
            if t.proc is not None and t.proc.popen.poll() is None:
                self.meta["rss_after_load_mb"][name] = round(rss_mb(t.proc.pid), 1)
                self.meta["rss_peak_hwm_mb"][name] = round(hwm_mb(t.proc.pid), 1)
        if "gateway" in self.targets and self.results:
            time.sleep(0.7 if self.args.smoke else 1.5)  # > one audit flush (0.5 s)
            self.meta["audit_rows"] = audit_rows(self.gateway_db)
        self.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.save()

    def save(self) -> None:
        path = os.path.join(self.out, f"results-{self.part}.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"meta": self.meta, "results": self.results}, f, indent=1, default=str)
        os.replace(path + ".tmp", path)


def audit_rows(db_path: str) -> dict[str, Any]:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db_path)) as con:
            rows = con.execute("select status, count(*) from routing_decisions group by status")
            return {str(k): v for k, v in rows.fetchall()}
    except sqlite3.Error as error:
        return {"error": str(error)}
