#!/usr/bin/env python3
"""provenance-router benchmark driver (issue 6). Standard library only: it starts every server as
its own process and never imports the gateway, so it runs even while the gateway is broken.

Targets, all in front of the same mock backend (``mock_backend.py``):

    direct    the load generator -> the mock (the floor)
    gateway   -> provenance-router (``router.asgi:create_app``: API-key auth, >= 60 deployments,
              a 14-rule policy, audit log on) -> mock
    raw-asgi  -> ``passthrough_raw.py`` (raw ASGI + one aiohttp session: the Python ceiling) -> mock
    raw-http1 -> the same passthrough with the gateway's own HTTP client (adapters/http1.py) -> mock
    litellm   -> LiteLLM proxy 1.106.2 (its own venv, made by ``--part setup``) -> mock

Pinning: servers under test on CPU 0; mock backends, load generator and this driver on CPU 1.

Usage (from the repository root, with the project's Python, e.g. ``.venv/bin/python``):

    bench/run.py                        the full run: every part below in sequence, then the
                                        report, published to docs/benchmarks.md + bench/results/
    bench/run.py --detach               the same, detached (for shells that cut commands at
                                        10 min); prints the output dir; see <out>/run.log
    bench/run.py --part P --out DIR     one part (each < 10 min), P in: setup nonstream stream
                                        other micro profile soak
    bench/run.py --report --out DIR [--publish]   merge the parts in DIR and render (publish)
    bench/run.py --smoke [--out DIR]    ~5 s: direct + gateway, pure-Python load generator,
                                        1 short cell per scenario kind (CI; no LiteLLM, no wrk)
    bench/run.py --soak                 >= 1 M requests or 30 min against the gateway, RSS
                                        every 10 s, growth per 100k requests
    bench/run.py --profile              = --part profile (py-spy of the gateway under load)

Knobs: --duration (10 s per cell), --warmup (2 s), --reps (3, alternated A B C A B C),
--targets, --generator (auto|wrk|python), --chunks (20); env BENCH_TOOLS_VENV (where setup puts
LiteLLM's proxy and py-spy; default /tmp/pr-bench-litellm).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
TOOLS_VENV = os.environ.get("BENCH_TOOLS_VENV", "/tmp/pr-bench-litellm")
LITELLM_PIN = "litellm[proxy]==1.106.2"  # 1.82.7 / 1.82.8 were malicious: exact pin only
PYSPY_PIN = "py-spy==0.4.3"
SERVER_CPU, CLIENT_CPU = 0, 1
CLK = os.sysconf("SC_CLK_TCK")
DROP = "\0drop"  # an env value that removes the variable from a child's environment
ALL_TARGETS = ("direct", "gateway", "raw-asgi", "raw-http1", "litellm")
PARTS = ("setup", "nonstream", "stream", "other", "micro", "profile")  # the full run, in order
# (scenario, kind, concurrency): kind picks the body and the mock
SCENARIOS = {
    "nonstream": [("chat", "chat", 1), ("chat", "chat", 16), ("chat", "chat", 64)],
    "stream": [("stream", "stream", 1), ("stream", "stream", 16)],
    "other": [("delay50", "slow", 64), ("embeddings", "embed", 16)],
}
SMOKE_SCENARIOS = [
    ("chat", "chat", 4),
    ("stream", "stream", 4),
    ("delay50", "slow", 4),
    ("embeddings", "embed", 4),
]
ENDPOINT = {
    "chat": "/v1/chat/completions",
    "stream": "/v1/chat/completions",
    "slow": "/v1/chat/completions",
    "embed": "/v1/embeddings",
}
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say something short about benchmarking."},
]
BODIES = {
    "chat": {"model": "mock", "messages": MESSAGES, "max_tokens": 64, "stream": False},
    "stream": {"model": "mock", "messages": MESSAGES, "max_tokens": 64, "stream": True},
    "slow": {"model": "mock-slow", "messages": MESSAGES, "max_tokens": 64, "stream": False},
    "embed": {
        "model": "mock-embed",
        "input": "Benchmarking an embeddings endpoint through an OpenAI-compatible gateway.",
    },
}


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ processes
def cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        return set()


_PINNABLE = {SERVER_CPU, CLIENT_CPU} <= cpus()  # decided before the driver pins itself


def pinnable() -> bool:
    return _PINNABLE


def pin_self() -> None:
    if pinnable():
        os.sched_setaffinity(0, {CLIENT_CPU})


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_tree(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return out


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def rss_mb(pid: int) -> float:
    return sum(status_kb(p, "VmRSS") for p in children_tree(pid)) / 1024.0


def hwm_mb(pid: int) -> float:
    return sum(status_kb(p, "VmHWM") for p in children_tree(pid)) / 1024.0


def die_with_parent() -> None:
    """In a child: get SIGTERM when the driver dies (even by SIGKILL), so no server outlives
    a killed run (Linux prctl PR_SET_PDEATHSIG; best effort elsewhere)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def cpu_busy(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat."""
    with contextlib.suppress(OSError), open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                return sum(v[:8]) - idle, sum(v[:8])
    return 0, 0


def cpu_s(pid: int) -> float:
    total = 0
    for p in children_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total / CLK


class Proc:
    """A process this run started (and only those are ever stopped)."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], started: float) -> None:
        self.name, self.popen, self.started = name, popen, started

    @property
    def pid(self) -> int:
        return self.popen.pid


class Runner:
    def __init__(self, out: str, part: str) -> None:
        self.out, self.part = out, part
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: list[str],
        cpu: int | None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> Proc:
        logf = open(os.path.join(self.out, f"{name}.{self.part}.log"), "ab")  # noqa: SIM115
        full_env = dict(os.environ)
        full_env.update(env or {})
        for k in [k for k, v in full_env.items() if v == DROP]:
            del full_env[k]
        pin = cpu if cpu is not None and pinnable() else None

        def preexec() -> None:
            die_with_parent()
            if pin is not None:
                os.sched_setaffinity(0, {pin})

        t0 = time.perf_counter()
        popen = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd or ROOT,
            start_new_session=True,
            preexec_fn=preexec,
        )
        logf.close()
        proc = Proc(name, popen, t0)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10) -> None:
        p = proc.popen
        if p.poll() is None:
            kids = [c for c in children_tree(p.pid) if c != p.pid]
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            for c in kids:  # only children of a process we started
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as error:  # keep stopping the others
                log("stop failed", proc.name, error)

    def logfile(self, proc: Proc) -> str:
        return os.path.join(self.out, f"{proc.name}.{self.part}.log")


Reply = tuple[int, dict[str, str], bytes]


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    auth: str | None = None,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> Reply:
    h = {"content-type": "application/json"}
    if auth:
        h["authorization"] = "Bearer " + auth
    h.update(headers or {})
    req = urllib.request.Request(url, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_ready(runner: Runner, proc: Proc, url: str, timeout: float = 180) -> float:
    """Seconds from process start to the first 200 on ``url`` (polled every 10 ms)."""
    while time.perf_counter() - proc.started < timeout:
        if proc.popen.poll() is not None:
            tail = open(runner.logfile(proc), errors="replace").read()[-2000:]  # noqa: SIM115
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")
        try:
            st, _, _ = http("GET", url, timeout=2)
            if st == 200:
                return time.perf_counter() - proc.started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{proc.name} not ready after {timeout}s")


# ------------------------------------------------------------------------------ tools
def tool(name: str) -> str:
    return os.path.join(TOOLS_VENV, "bin", name)


def tools_versions() -> dict[str, str]:
    code = (
        "import importlib.metadata as m\n"
        "for p in ('litellm', 'py-spy', 'fastapi', 'uvicorn'):\n"
        "    try: print(p, m.version(p))\n    except Exception: print(p, 'missing')"
    )
    try:
        out = subprocess.run(
            [tool("python"), "-c", code], capture_output=True, text=True, timeout=60
        ).stdout
    except OSError:
        return {}
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def setup_tools(need_litellm: bool = True) -> dict[str, Any]:
    """wrk (apt, when root and missing) and the tools venv (LiteLLM proxy + py-spy), pinned."""
    info: dict[str, Any] = {}
    if (
        shutil.which("wrk") is None
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
        and shutil.which("apt-get")
    ):
        log("installing wrk with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    info["wrk"] = shutil.which("wrk") or "missing (the pure-Python load generator is used)"
    if need_litellm:
        have = tools_versions()
        if have.get("litellm") != "1.106.2" or have.get("py-spy") != PYSPY_PIN.split("==")[1]:
            log(f"creating {TOOLS_VENV}: {LITELLM_PIN} {PYSPY_PIN} (a few minutes)")
            base = shutil.which("python3.11") or PY
            if not os.path.exists(tool("python")):
                subprocess.run([base, "-m", "venv", TOOLS_VENV], check=True)
            subprocess.run([tool("pip"), "install", "-q", LITELLM_PIN, PYSPY_PIN], check=True)
        info["tools_venv"] = TOOLS_VENV
        info["tools_versions"] = tools_versions()
    return info


def versions() -> dict[str, str]:
    code = (
        "import importlib.metadata as m, sys\nprint('python', sys.version.split()[0])\n"
        "for p in ('provenance-router', 'uvicorn', 'uvloop', 'httptools', 'aiohttp', 'orjson', "
        "'cedarpy', 'sqlalchemy', 'fastapi'):\n"
        "    try: print(p, m.version(p))\n    except Exception: print(p, 'missing')"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True).stdout
    v = dict(line.split(" ", 1) for line in out.strip().splitlines())
    for k, val in tools_versions().items():
        v["tools:" + k] = val
    wrk = shutil.which("wrk")
    if wrk:
        v["wrk"] = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    if commit:
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        commit += " + uncommitted changes" if dirty else ""
    v["commit"] = commit or "no commit"
    return v


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "mem_mb": mem,
        "kernel": platform.release(),
        "os": platform.platform(),
        "pinned": pinnable(),
    }


# ------------------------------------------------------------------------------ load
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

    def run(self, url: str, conc: int, seconds: float, kind: str, auth: str) -> dict[str, Any]:
        pre = ["taskset", "-c", str(CLIENT_CPU)] if pinnable() and shutil.which("taskset") else []
        if self.wrk:
            env = dict(os.environ, WRK_BODY_FILE=self.bodies[kind], WRK_AUTH=auth)
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


# ------------------------------------------------------------------------------ targets
class Target:
    def __init__(
        self, name: str, proc: Proc | None, base: str, auth: str, startup_s: float | None = None
    ) -> None:
        self.name, self.proc, self.base, self.auth = name, proc, base, auth
        self.startup_s = startup_s
        self.idle_rss: float | None = None

    def url(self, kind: str) -> str:
        return self.base + ENDPOINT[kind]


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
            return f"http://127.0.0.1:{self.p_slow}" + ENDPOINT[kind]
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

    def start_targets(self) -> None:
        self.start_mocks()
        starters = {
            "gateway": self.start_gateway,
            "raw-asgi": self.start_raw,
            "raw-http1": lambda: self.start_raw("raw-http1"),
            "litellm": self.start_litellm,
        }
        for name in self.args.targets:
            if name in starters:
                t = starters[name]()
                self.targets[name] = t
                self.meta["startup_s"][name] = round(t.startup_s or 0, 3)
                log(f"{name} ready in {t.startup_s:.3f}s")
        time.sleep(2 if not self.args.smoke else 0.5)
        for name, t in self.targets.items():
            if t.proc is not None:
                t.idle_rss = round(rss_mb(t.proc.pid), 1)
                self.meta["rss_idle_mb"][name] = t.idle_rss

    # -- checks
    def check(self, target: Target, kind: str) -> dict[str, Any]:
        """One request, validated (content, SSE framing, embeddings, provenance headers)."""
        body = json.dumps(BODIES[kind]).encode()
        t0 = time.perf_counter()
        st, headers, data = http("POST", self.target_url(target, kind), body, target.auth)
        ms = round((time.perf_counter() - t0) * 1000, 2)
        info: dict[str, Any] = {"status": st, "ms": ms}
        ok = st == 200
        try:
            if kind == "stream":
                events = [ln for ln in data.decode().splitlines() if ln.startswith("data:")]
                info["sse_events"] = len(events)
                ok = ok and bool(events) and events[-1].strip() == "data: [DONE]"
            elif kind == "embed":
                vec = json.loads(data)["data"][0]["embedding"]
                info["embedding"] = f"{len(vec)} floats" if isinstance(vec, list) else "base64"
            else:
                info["content_chars"] = len(json.loads(data)["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
        if target.name == "gateway":
            prov = {k: v for k, v in headers.items() if k.startswith("x-provenance-")}
            prov["x-request-id"] = headers.get("x-request-id", "")
            info["headers"] = prov
            allowed = [
                d
                for d, verdict in self.meta["gateway_seed"]["decisions"][
                    BODIES[kind]["model"]
                ].items()
                if verdict == "allow"
            ]
            ok = ok and prov.get("x-provenance-deployment") in allowed
        if not ok:
            raise RuntimeError(f"check failed for {target.name}/{kind}: {info} {data[:400]!r}")
        return info

    def check_all(self) -> None:
        for name, target in self.targets.items():
            for kind in ("chat", "stream", "slow", "embed"):
                self.meta["checks"][f"{name}/{kind}"] = self.check(target, kind)
        if "gateway" in self.targets:  # a denial is a 403 with the deciding rule ids
            g = self.targets["gateway"]
            st, _, data = http(
                "POST", g.url("chat"), json.dumps(BODIES["chat"]).encode(), "sk-wrong-key"
            )
            self.meta["checks"]["gateway/bad-key"] = {"status": st}
            if st != 401:
                raise RuntimeError(f"gateway accepted a wrong key: {st} {data[:200]!r}")
        log("checks passed:", ", ".join(self.meta["checks"]))

    # -- measurement
    def measure(self, load: Load, scenarios: list[tuple[str, str, int]]) -> None:
        names = [n for n in ALL_TARGETS if n in self.targets]
        total, n, t_start = self.args.reps * len(scenarios) * len(names), 0, time.time()
        for rep in range(self.args.reps):
            for scenario, kind, conc in scenarios:
                for name in names:
                    n += 1
                    target = self.targets[name]
                    url = self.target_url(target, kind)
                    if self.args.warmup > 0:
                        load.run(url, conc, self.args.warmup, kind, target.auth)
                    server = target.proc if name != "direct" else None
                    mocks = [self.mock_for(kind)]
                    samp = Sampler(server.pid) if server else None
                    c0 = cpu_s(server.pid) if server else 0.0
                    m0 = sum(cpu_s(m.pid) for m in mocks)
                    b0 = cpu_busy(SERVER_CPU)
                    t0 = time.perf_counter()
                    if samp:
                        samp.start()
                    r = load.run(url, conc, self.args.duration, kind, target.auth)
                    wall = time.perf_counter() - t0
                    b1 = cpu_busy(SERVER_CPU)
                    if samp:
                        samp.done.set()
                        samp.join()
                    r.update(
                        target=name,
                        scenario=scenario,
                        kind=kind,
                        conc=conc,
                        rep=rep,
                        part=self.part,
                        server_cpu_pct=round(100 * (cpu_s(server.pid) - c0) / wall, 1)
                        if server
                        else None,
                        mock_cpu_pct=round(100 * (sum(cpu_s(m.pid) for m in mocks) - m0) / wall, 1),
                        rss_mb=round(rss_mb(server.pid), 1) if server else None,
                        rss_max_sampled_mb=round(samp.max_rss, 1) if samp else None,
                        cpu0_busy_pct=round(100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1]), 1),
                        loadavg=os.getloadavg()[0],
                    )
                    self.results.append(r)
                    eta = (time.time() - t_start) / n * (total - n)
                    log(
                        f"[{n}/{total}] rep{rep} {name:8s} {scenario:10s} c={conc:<3d} "
                        f"rps={r['rps']:.0f} p50={r['p50_us'] / 1000:.2f}ms "
                        f"p99={r['p99_us'] / 1000:.2f}ms errs={r['errors']} "
                        f"srvcpu={r['server_cpu_pct']} eta={eta:.0f}s"
                    )
                    self.save()

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


# ------------------------------------------------------------------------------ parts
def part_measure(args: argparse.Namespace, part: str) -> None:
    bench = Bench(args, part)
    bench.meta["versions"], bench.meta["machine"] = versions(), machine()
    load = Load(args.out, args.generator)
    bench.meta["generator"] = load.name
    try:
        bench.start_targets()
        bench.check_all()
        scenarios = SMOKE_SCENARIOS if args.smoke else SCENARIOS[part]
        bench.measure(load, scenarios)
        bench.finish()
    finally:
        bench.runner.stop_all()


def part_micro(args: argparse.Namespace) -> None:
    """Startup to ready (repeated), idle RSS, and the policy decision micro-benchmark."""
    bench = Bench(args, "micro")
    bench.meta["versions"], bench.meta["machine"] = versions(), machine()
    reps = max(3, args.reps + 2)
    try:
        bench.start_mocks()
        starts: dict[str, list[float]] = {"gateway": [], "raw-asgi": []}
        idle: dict[str, list[float]] = {"gateway": [], "raw-asgi": []}
        for _ in range(reps):
            for name, starter in (("gateway", bench.start_gateway), ("raw-asgi", bench.start_raw)):
                t = starter()
                starts[name].append(round(t.startup_s or 0, 3))
                time.sleep(2)
                assert t.proc is not None
                idle[name].append(round(rss_mb(t.proc.pid), 1))
                bench.runner.stop(t.proc)
        if "litellm" in args.targets:
            starts["litellm"], idle["litellm"] = [], []
            for _ in range(2):
                t = bench.start_litellm()
                starts["litellm"].append(round(t.startup_s or 0, 3))
                time.sleep(2)
                assert t.proc is not None
                idle["litellm"].append(round(rss_mb(t.proc.pid), 1))
                bench.runner.stop(t.proc)
        bench.meta["startup_runs_s"], bench.meta["rss_idle_runs_mb"] = starts, idle
        bench.meta["startup_s"] = {k: statistics.median(v) for k, v in starts.items() if v}
        bench.meta["rss_idle_mb"] = {k: statistics.median(v) for k, v in idle.items() if v}
        log("startup", bench.meta["startup_s"], "idle RSS", bench.meta["rss_idle_mb"])
        cmd = [
            PY,
            os.path.join(HERE, "policy_micro.py"),
            "--database-url",
            f"sqlite:///{bench.gateway_db}",
        ]
        if pinnable():
            cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
            env={**os.environ, **bench.gateway_env(bench.gateway_db)},
        )
        if r.returncode != 0:
            raise RuntimeError(f"policy micro-benchmark failed:\n{r.stderr[-3000:]}")
        bench.meta["policy_micro"] = json.loads(r.stdout)
        log("policy", json.dumps(bench.meta["policy_micro"]["summary"]))
        bench.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        bench.save()
    finally:
        bench.runner.stop_all()


def part_profile(args: argparse.Namespace) -> None:
    """py-spy (--gil, raw collapsed stacks, 100 Hz) of the gateway and the ceiling under load."""
    setup_tools()
    bench = Bench(args, "profile")
    bench.meta["versions"], bench.meta["machine"] = versions(), machine()
    load = Load(args.out, args.generator)
    seconds = args.profile_seconds
    profiles: dict[str, Any] = {}
    try:
        bench.start_mocks()
        bench.targets["gateway"] = bench.start_gateway()
        bench.targets["raw-asgi"] = bench.start_raw()
        bench.check_all()
        plan = [
            ("gateway", "chat", 16),
            ("gateway", "stream", 16),
            ("gateway", "embed", 16),
            ("gateway", "chat", 1),
            ("raw-asgi", "chat", 16),
            ("raw-asgi", "stream", 16),
        ]
        for name, kind, conc in plan:
            target = bench.targets[name]
            assert target.proc is not None
            raw = os.path.join(args.out, f"pyspy_{name}_{kind}_c{conc}.txt")
            result: dict[str, Any] = {}
            thread = threading.Thread(
                target=lambda t=target, k=kind, c=conc, r=result: r.update(
                    load.run(bench.target_url(t, k), c, seconds + 4, k, t.auth)
                )
            )
            thread.start()
            time.sleep(2)
            cmd = [
                tool("py-spy"),
                "record",
                "--pid",
                str(target.proc.pid),
                "--gil",
                "--format",
                "raw",
                "-o",
                raw,
                "-d",
                str(seconds),
                "-r",
                "100",
                "--nonblocking",
            ]
            if pinnable():
                cmd = ["taskset", "-c", str(CLIENT_CPU), *cmd]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
            thread.join()
            key = f"{name}/{kind}/c{conc}"
            if r.returncode != 0 or not os.path.exists(raw):
                profiles[key] = {"error": (r.stderr or r.stdout)[-400:]}
                continue
            summary = raw.replace(".txt", ".summary.txt")
            s = subprocess.run(
                [PY, os.path.join(HERE, "pyspy_summary.py"), raw, "40"],
                capture_output=True,
                text=True,
            )
            with open(summary, "w") as f:
                f.write(
                    f"# {key}: {result.get('rps', 0):.0f} req/s under py-spy --gil "
                    f"--nonblocking at 100 Hz\n" + s.stdout
                )
            layers = subprocess.run(
                [PY, os.path.join(HERE, "pyspy_summary.py"), raw, "--json"],
                capture_output=True,
                text=True,
            )
            profiles[key] = {
                "raw": os.path.basename(raw),
                "summary": os.path.basename(summary),
                "rps_under_profiler": round(result.get("rps", 0)),
                "errors": result.get("errors"),
                "layers": json.loads(layers.stdout) if layers.returncode == 0 else {},
            }
            log(f"profiled {key}: {profiles[key].get('layers', {}).get('layers_self_pct')}")
        bench.meta["profiles"] = profiles
        bench.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        bench.save()
    finally:
        bench.runner.stop_all()


def part_soak(args: argparse.Namespace) -> None:
    """Closed-loop load on the gateway in 10 s slices (chat, stream, embeddings in turn) until
    ``--soak-requests`` or ``--soak-minutes``; RSS after every slice (= every 10 s)."""
    bench = Bench(args, "soak")
    bench.meta["versions"], bench.meta["machine"] = versions(), machine()
    load = Load(args.out, args.generator)
    bench.meta["generator"] = load.name
    slice_s = 10
    samples: list[dict[str, Any]] = []
    try:
        bench.start_mocks()
        gw = bench.targets["gateway"] = bench.start_gateway()
        bench.check_all()
        assert gw.proc is not None
        pid = gw.proc.pid
        t0, done, errors = time.time(), 0, 0
        samples.append({"t": 0.0, "requests": 0, "rss_mb": round(rss_mb(pid), 1)})
        kinds = ["chat", "stream", "embed"]
        i = 0
        while done < args.soak_requests and time.time() - t0 < args.soak_minutes * 60:
            kind = kinds[i % len(kinds)]
            r = load.run(gw.url(kind), args.soak_conc, slice_s, kind, gw.auth)
            done += r["requests"]
            errors += r["errors"]
            i += 1
            samples.append(
                {
                    "t": round(time.time() - t0, 1),
                    "requests": done,
                    "kind": kind,
                    "rps": round(r["rps"]),
                    "errors": r["errors"],
                    "rss_mb": round(rss_mb(pid), 1),
                }
            )
            bench.meta["soak"] = soak_summary(samples, errors)
            bench.save()
            if i % 6 == 0:
                log(
                    f"soak {done:,} requests, {time.time() - t0:.0f}s, "
                    f"rss {samples[-1]['rss_mb']} MB, errors {errors}"
                )
        bench.meta["soak"] = soak_summary(samples, errors)
        bench.meta["rss_peak_hwm_mb"] = {"gateway": round(hwm_mb(pid), 1)}
        time.sleep(1.5)
        bench.meta["audit_rows"] = audit_rows(bench.gateway_db)
        bench.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        bench.save()
        log("soak", json.dumps({k: v for k, v in bench.meta["soak"].items() if k != "samples"}))
    finally:
        bench.runner.stop_all()


SOAK_MAX_GROWTH_MB_PER_100K = 0.5


def soak_summary(samples: list[dict[str, Any]], errors: int) -> dict[str, Any]:
    """Growth = least-squares slope of RSS over requests after a warm-up (the first 10 % of
    requests and the first 60 s)."""
    total = samples[-1]["requests"]
    steady = [s for s in samples if s["requests"] >= 0.1 * total and s["t"] >= 60] if total else []
    slope = None
    if len(steady) >= 3:
        xs = [s["requests"] for s in steady]
        ys = [s["rss_mb"] for s in steady]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0
    return {
        "requests": total,
        "seconds": samples[-1]["t"],
        "errors": errors,
        "rss_start_mb": samples[0]["rss_mb"],
        "rss_end_mb": samples[-1]["rss_mb"],
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "growth_mb_per_100k": round(slope * 100_000, 3) if slope is not None else None,
        "samples": samples,
    }


# ------------------------------------------------------------------------------ report
def load_parts(out: str) -> list[dict[str, Any]]:
    parts = []
    for fn in sorted(glob.glob(os.path.join(out, "results-*.json"))):
        with open(fn) as f:
            parts.append(json.load(f))
    parts.sort(key=lambda d: d["meta"]["started"])
    return parts


def med(rs: list[dict[str, Any]], k: str) -> float:
    return float(statistics.median(r[k] for r in rs))


def analyse(parts: list[dict[str, Any]]) -> dict[str, Any]:
    results = [r for d in parts for r in d["results"]]
    metas = {d["meta"]["part"]: d["meta"] for d in parts}
    cells: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        cells.setdefault((r["scenario"], r["conc"]), {}).setdefault(r["target"], []).append(r)
    rows = []
    order = {"chat": 0, "stream": 1, "delay50": 2, "embeddings": 3}
    for (scenario, conc), by_target in sorted(
        cells.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])
    ):
        direct = by_target.get("direct")
        raw, lite = by_target.get("raw-asgi"), by_target.get("litellm")
        for t in ALL_TARGETS:
            rs = by_target.get(t)
            if not rs:
                continue
            cpu = [x["server_cpu_pct"] if t != "direct" else x["mock_cpu_pct"] for x in rs]
            rps = med(rs, "rps")
            rows.append(
                {
                    "scenario": scenario,
                    "conc": conc,
                    "target": t,
                    "n": len(rs),
                    "rps": rps,
                    "rps_min": min(x["rps"] for x in rs),
                    "rps_max": max(x["rps"] for x in rs),
                    "p50_ms": med(rs, "p50_us") / 1000,
                    "p99_ms": med(rs, "p99_us") / 1000,
                    "added_p50_ms": (med(rs, "p50_us") - med(direct, "p50_us")) / 1000
                    if direct and t != "direct"
                    else None,
                    "vs_raw": rps / med(raw, "rps") if raw and t == "gateway" else None,
                    "vs_litellm": rps / med(lite, "rps")
                    if lite and t != "litellm" and t != "direct"
                    else None,
                    "cpu_pct": statistics.median(c for c in cpu if c is not None)
                    if any(c is not None for c in cpu)
                    else None,
                    "cpu0_other_pct": statistics.median(
                        max(0.0, x.get("cpu0_busy_pct", 0) - (x["server_cpu_pct"] or 0)) for x in rs
                    )
                    if t != "direct"  # the mock runs on CPU 1: CPU 0 is not its core
                    else None,
                    "errors": sum(x["errors"] for x in rs),
                    "requests": sum(x["requests"] for x in rs),
                    "generator": rs[0].get("generator"),
                }
            )
    startup: dict[str, Any] = {}
    idle: dict[str, Any] = {}
    peak: dict[str, float] = {}
    after: dict[str, float] = {}
    for part in dict.fromkeys(("micro", *PARTS, "smoke", "soak")):
        m = metas.get(part)
        if not m:
            continue
        runs = m.get("startup_runs_s") or {k: [v] for k, v in m["startup_s"].items()}
        for k, v in runs.items():
            startup.setdefault(k, []).extend(v)
        runs = m.get("rss_idle_runs_mb") or {k: [v] for k, v in m["rss_idle_mb"].items()}
        for k, v in runs.items():
            idle.setdefault(k, []).extend(v)
        for k, v in (m.get("rss_peak_hwm_mb") or {}).items():
            peak[k] = max(peak.get(k, 0), v)
        after.update(m.get("rss_after_load_mb") or {})
    return {
        "rows": rows,
        "metas": metas,
        "startup": startup,
        "idle": idle,
        "peak": peak,
        "after": after,
    }


def row(a: dict[str, Any], scenario: str, conc: int, target: str) -> dict[str, Any] | None:
    for r in a["rows"]:
        if (r["scenario"], r["conc"], r["target"]) == (scenario, conc, target):
            return r
    return None


def targets_verdict(a: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6 targets: each met / missed / not measured, with the measured value."""
    out = []

    def add(name: str, value: float | None, goal: str, ok: bool | None, unit: str = "") -> None:
        out.append(
            {
                "target": name,
                "goal": goal,
                "value": None if value is None else round(value, 4),
                "unit": unit,
                "verdict": "not measured"
                if value is None
                else "info"
                if ok is None
                else ("met" if ok else "MISSED"),
            }
        )

    chunks = next((m["config"]["chunks"] for m in a["metas"].values()), 20)
    g16, l16 = row(a, "chat", 16, "gateway"), row(a, "chat", 16, "litellm")
    v = g16["rps"] / l16["rps"] if g16 and l16 else None
    add(
        "throughput vs LiteLLM proxy, non-stream c=16",
        v,
        ">= 50x",
        None if v is None else v >= 50,
        "x",
    )
    for scenario, label in (("chat", "non-stream"), ("stream", "stream")):
        for conc in (1, 16, 64):
            g, r = row(a, scenario, conc, "gateway"), row(a, scenario, conc, "raw-asgi")
            if g and r:
                v = g["rps"] / r["rps"]
                add(
                    f"share of raw-ASGI ceiling, {label} c={conc}",
                    100 * v,
                    ">= 70 %",
                    v >= 0.7,
                    "%",
                )
    for scenario, label, concs in (
        ("chat", "non-stream", (1, 16, 64)),
        ("stream", "stream", (1, 16)),
        ("embeddings", "embeddings", (16,)),
    ):
        for conc in concs:
            g, h = row(a, scenario, conc, "gateway"), row(a, scenario, conc, "raw-http1")
            if g and h:
                add(
                    f"gateway / raw-http1 (same client, nothing else), {label} c={conc}",
                    100 * g["rps"] / h["rps"],
                    "(what auth, policy, routing, audit cost)",
                    None,
                    "%",
                )
    g = row(a, "chat", 1, "gateway")
    v = g["added_p50_ms"] if g else None
    add(
        "added p50 vs direct, non-stream c=1", v, "<= 0.3 ms", None if v is None else v <= 0.3, "ms"
    )
    g = row(a, "stream", 1, "gateway")
    v = g["added_p50_ms"] / chunks if g and g["added_p50_ms"] is not None else None
    add(
        f"added p50 per streamed chunk, stream c=1 (whole added p50 / {chunks} chunks)",
        v,
        "<= 0.05 ms",
        None if v is None else v <= 0.05,
        "ms",
    )
    n = row(a, "chat", 1, "gateway")
    v = None
    if g and n and g["added_p50_ms"] is not None and n["added_p50_ms"] is not None:
        v = (g["added_p50_ms"] - n["added_p50_ms"]) / chunks
    add(
        "added p50 per streamed chunk beyond the per-request overhead "
        "((stream - non-stream added p50) / chunks)",
        v,
        "<= 0.05 ms",
        None if v is None else v <= 0.05,
        "ms",
    )
    s = a["startup"].get("gateway")
    v = statistics.median(s) if s else None
    add("start to ready (no bundled model)", v, "< 1 s", None if v is None else v < 1, "s")
    s = a["idle"].get("gateway")
    v = statistics.median(s) if s else None
    add("idle RSS", v, "< 100 MB", None if v is None else v < 100, "MB")
    soak = (a["metas"].get("soak") or {}).get("soak")
    v = soak.get("growth_mb_per_100k") if soak else None
    add(
        "RSS growth over soak (per 100k requests)",
        v,
        f"none (<= {SOAK_MAX_GROWTH_MB_PER_100K} MB / 100k)",
        None if v is None else v <= SOAK_MAX_GROWTH_MB_PER_100K,
        "MB",
    )
    if soak and soak["requests"] < 1_000_000 and soak["seconds"] < 29 * 60:
        out[-1]["verdict"] += f" (short soak: {soak['requests']:,} requests, indicative only)"
    pm = ((a["metas"].get("micro") or {}).get("policy_micro") or {}).get("summary", {})
    v = pm.get("cached_decide_us")
    add("cached policy decision", v, "<= 20 us", None if v is None else v <= 20, "us")
    v = pm.get("uncached_per_candidate_us")
    add(
        "uncached policy decision, per candidate",
        v,
        "<= 100 us",
        None if v is None else v <= 100,
        "us",
    )
    return out


def fmt(x: float | None, nd: int = 2, suffix: str = "") -> str:
    return "-" if x is None else f"{x:,.{nd}f}{suffix}"


def render(a: dict[str, Any], out: str) -> str:
    metas = a["metas"]
    any_meta = next(iter(metas.values()))
    cfg = any_meta["config"]
    preliminary = cfg["reps"] < 3 or cfg["duration"] < 10 or cfg.get("smoke")
    L = []
    L.append(
        f"Run: {os.path.relpath(out, ROOT) if out.startswith(ROOT) else out} - parts: "
        + "; ".join(f"{p} {m['started']} -> {m.get('finished', '?')}" for p, m in metas.items())
    )
    if preliminary:
        L.append("")
        L.append(
            f"**PRELIMINARY** - short run ({cfg['reps']} rep(s) x {cfg['duration']} s per "
            "cell); not the figures of record."
        )
    L.append("")
    mach = any_meta.get("machine", {})
    L.append(
        f"Machine: {mach.get('cpu')} - {mach.get('cpus')} CPUs, {mach.get('mem_mb')} MB, "
        f"kernel {mach.get('kernel')}; servers pinned to CPU {SERVER_CPU}, mock + load "
        f"generator + driver on CPU {CLIENT_CPU} (pinned: {mach.get('pinned')})."
    )
    gens = sorted({r["generator"] for r in a["rows"] if r.get("generator")})
    L.append(
        f"Cells: median of {cfg['reps']} alternated run(s) x {cfg['duration']} s after "
        f"{cfg['warmup']} s warm-up; load generator: {', '.join(gens) or '-'}; stream = "
        f"{cfg['chunks']} content chunks (+ role, finish, [DONE])."
    )
    seed = next((m.get("gateway_seed") for m in metas.values() if m.get("gateway_seed")), None)
    if seed:
        c = seed["counts"]
        L.append(
            f"Gateway registry: {c['deployments']} deployments, {c['models']} models, "
            f"{c['organizations']} organizations, {c['routes']} routes; policy of "
            f"{seed['policy_rules']} YAML rules (+ built-in baseline); API-key auth; audit "
            "log on. Each benchmark route lists denied candidates first."
        )
    L.append("")
    L.append(
        "| scenario | conc | target | req/s | min-max | p50 ms | p99 ms | added p50 vs direct "
        "ms | vs raw-asgi | vs litellm | server CPU % | other load on CPU 0 % | errors |"
    )
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {
        "chat": "non-stream",
        "stream": "stream",
        "delay50": "non-stream, 50 ms backend",
        "embeddings": "embeddings",
    }
    for r in a["rows"]:
        L.append(
            f"| {names.get(r['scenario'], r['scenario'])} | {r['conc']} | {r['target']} | "
            f"{r['rps']:,.0f} | {r['rps_min']:,.0f}-{r['rps_max']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {fmt(r['added_p50_ms'], 3)} | "
            f"{fmt(None if r['vs_raw'] is None else 100 * r['vs_raw'], 0, ' %')} | "
            f"{fmt(r['vs_litellm'], 1, 'x')} | {fmt(r['cpu_pct'], 0)}"
            f"{' (mock)' if r['target'] == 'direct' else ''} | "
            f"{fmt(r.get('cpu0_other_pct'), 0)} | {r['errors']} |"
        )
    disturbed = [r for r in a["rows"] if (r.get("cpu0_other_pct") or 0) > 10]
    if disturbed:
        L.append("")
        L.append(
            f"**Warning:** other processes used CPU 0 (the server's core) during "
            f"{len(disturbed)} of {len(a['rows'])} cells (up to "
            f"{max(r['cpu0_other_pct'] for r in disturbed):.0f} % of it): those figures are "
            "disturbed; rerun on a quiet machine."
        )
    L.append("")
    L.append(
        "| server | start to ready s (median; runs) | idle RSS MB (median) | peak RSS MB "
        "(VmHWM) | RSS after load MB |"
    )
    L.append("|---|---:|---:|---:|---:|")
    for t in ALL_TARGETS[1:]:
        s, i = a["startup"].get(t), a["idle"].get(t)
        if not s and not i:
            continue
        L.append(
            f"| {t} | {fmt(statistics.median(s), 3) if s else '-'} "
            f"({', '.join(f'{x:.2f}' for x in s or [])}) | "
            f"{fmt(statistics.median(i), 1) if i else '-'} | {a['peak'].get(t, '-')} | "
            f"{a['after'].get(t, '-')} |"
        )
    pm = (metas.get("micro") or {}).get("policy_micro")
    if pm:
        s = pm["summary"]
        L.append("")
        L.append(f"Policy engine micro-benchmark (pinned to CPU {SERVER_CPU}; {pm['setup']}):")
        L.append("")
        L.append("| measure | us |")
        L.append("|---|---:|")
        for k, label in (
            ("build_ms", "PolicyEngine.build (ms, once per registry/policy version)"),
            ("cached_decide_us", "decide(), cached"),
            ("cached_eligible_us", "eligible_deployments() over a route, cached"),
            ("cached_per_candidate_us", "  … per candidate"),
            ("uncached_decide_us", "decide(), uncached (1 candidate)"),
            ("uncached_eligible_us", "eligible_deployments(), uncached"),
            ("uncached_per_candidate_us", "  … per candidate"),
        ):
            if k in s:
                L.append(f"| {label} | {s[k]:,.2f} |")
    soak = (metas.get("soak") or {}).get("soak")
    if soak:
        L.append("")
        L.append(
            f"Soak: {soak['requests']:,} requests in {soak['seconds']:.0f} s (chat, stream, "
            f"embeddings in turn, 10 s slices), errors {soak['errors']}; RSS "
            f"{soak['rss_start_mb']} -> {soak['rss_end_mb']} MB (max {soak['rss_max_mb']}); "
            f"growth {fmt(soak['growth_mb_per_100k'], 3)} MB per 100k requests "
            "(least squares after the first 10 % of requests and 60 s)."
        )
    audit = [m.get("audit_rows") for m in metas.values() if m.get("audit_rows")]
    if audit:
        L.append("")
        L.append(
            "Audit rows written by the gateway (per part): "
            + "; ".join(f"{p}: {m['audit_rows']}" for p, m in metas.items() if m.get("audit_rows"))
        )
    L.append("")
    L.append("| target (issue 6) | goal | measured | verdict |")
    L.append("|---|---|---:|---|")
    for v in targets_verdict(a):
        L.append(
            f"| {v['target']} | {v['goal']} | {fmt(v['value'], 3)} {v['unit']} | {v['verdict']} |"
        )
    prof = (metas.get("profile") or {}).get("profiles")
    if prof:
        L.extend(render_profiles(prof, out))
    versions_ = any_meta.get("versions", {})
    L.append("")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions_.items()))
    return "\n".join(L) + "\n"


def render_profiles(prof: dict[str, Any], out: str) -> list[str]:
    """Where the CPU goes, per profile: share of on-CPU (GIL-holding) samples by stage,
    recomputed from the raw py-spy files when they are still in ``out``."""
    sys.path.insert(0, HERE)
    import pyspy_summary

    stages: dict[str, dict[str, float]] = {}
    for key, p in prof.items():
        raw = os.path.join(out, p.get("raw", ""))
        if p.get("raw") and os.path.exists(raw):
            p["layers"] = pyspy_summary.summarise(pyspy_summary.parse(raw))
        stages[key] = (p.get("layers") or {}).get("stages_pct", {})
    names: list[str] = []
    for st in stages.values():
        names.extend(n for n in st if n not in names)
    keys = list(prof)
    L = [
        "",
        "py-spy (`record --gil --nonblocking`, 100 Hz): share of on-CPU samples by stage, "
        "first match over the whole stack (summaries: `pyspy_*.summary.txt`)",
        "",
    ]
    L.append("| stage | " + " | ".join(keys) + " |")
    L.append("|---|" + "---:|" * len(keys))
    L.append(
        "| req/s under the profiler | "
        + " | ".join(str(prof[k].get("rps_under_profiler", "-")) for k in keys)
        + " |"
    )
    for n in names:
        L.append(f"| {n} | " + " | ".join(fmt(stages[k].get(n), 1) for k in keys) + " |")
    return L


def report(out: str, publish: bool = False) -> str:
    parts = load_parts(out)
    if not parts:
        raise SystemExit(f"no results-*.json in {out}")
    a = analyse(parts)
    text = render(a, out)
    merged = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": a["rows"],
        "startup_s": a["startup"],
        "rss_idle_mb": a["idle"],
        "rss_peak_mb": a["peak"],
        "targets": targets_verdict(a),
        "parts": parts,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(merged, f, indent=1, default=str)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    if publish:
        publish_results(out, a, text, merged)
    return text


BEGIN, END = "<!-- BEGIN bench results (bench/run.py) -->", "<!-- END bench results -->"


def publish_results(out: str, a: dict[str, Any], text: str, merged: dict[str, Any]) -> None:
    """bench/results/<date>[-preliminary]/ (JSON, table, profile summaries) + docs section."""
    cfg = next(iter(a["metas"].values()))["config"]
    prelim = cfg["reps"] < 3 or cfg["duration"] < 10
    name = dt.date.today().isoformat() + ("-preliminary" if prelim else "")
    dest = os.path.join(HERE, "results", name)
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "results.json"), "w") as f:
        json.dump(merged, f, indent=1, default=str)
    with open(os.path.join(dest, "table.md"), "w") as f:
        f.write(text)
    for fn in glob.glob(os.path.join(out, "pyspy_*.summary.txt")):
        shutil.copy(fn, dest)
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    rel = os.path.relpath(dest, ROOT)
    block = (
        f"{BEGIN}\n### {'Preliminary figures' if prelim else 'Figures'} "
        f"({dt.date.today().isoformat()}, `{rel}/`)\n\n{text}{END}"
    )
    if os.path.exists(doc):
        with open(doc) as f:
            current = f.read()
        if BEGIN in current and END in current:
            head, rest = current.split(BEGIN, 1)
            current = head + block + rest.split(END, 1)[1]
        else:
            current = current.rstrip("\n") + "\n\n" + block + "\n"
    else:
        current = "# Benchmarks\n\n" + block + "\n"
    with open(doc, "w") as f:
        f.write(current)
    log(f"published {rel}/ and docs/benchmarks.md")


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", choices=(*PARTS, "soak", "all"), default="all")
    p.add_argument("--out", help="output dir shared by the parts (default bench/out/<timestamp>)")
    p.add_argument("--report", action="store_true", help="merge the parts in --out and render")
    p.add_argument(
        "--publish",
        action="store_true",
        help="with --report: write docs/benchmarks.md and bench/results/<date>/",
    )
    p.add_argument("--smoke", action="store_true", help="~5 s: direct + gateway, loadgen.py")
    p.add_argument("--soak", action="store_true", help="= --part soak")
    p.add_argument("--profile", action="store_true", help="= --part profile")
    p.add_argument("--detach", action="store_true", help="run in the background; see run.log")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--targets", default=",".join(ALL_TARGETS))
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--profile-seconds", type=int, default=10)
    p.add_argument("--soak-requests", type=int, default=1_000_000)
    p.add_argument("--soak-minutes", type=float, default=30)
    p.add_argument("--soak-conc", type=int, default=16)
    args = p.parse_args(argv)
    if args.soak:
        args.part = "soak"
    if args.profile:
        args.part = "profile"
    args.targets = [t for t in args.targets.split(",") if t]
    if args.smoke:
        args.part = "smoke"
        args.targets = [t for t in args.targets if t in ("direct", "gateway")]
        args.duration, args.warmup, args.reps = min(args.duration, 0.3), 0, 1
        if args.generator == "auto":
            args.generator = "python"
    if not args.out:
        args.out = os.path.join(HERE, "out", time.strftime("%Y%m%d-%H%M%S"))
    args.out = os.path.abspath(args.out)
    return args


def detach(argv: list[str], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    argv = [a for a in argv if a != "--detach"]
    if "--out" not in argv:
        argv += ["--out", out]
    with open(os.path.join(out, "run.log"), "ab") as logf:
        p = subprocess.Popen(
            [PY, os.path.abspath(__file__), *argv],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
    print(
        f"benchmark running in the background: pid {p.pid}\n  log: {out}/run.log\n"
        f"  results: {out}/table.md when done (then bench/run.py --report --out {out})"
    )


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    if args.detach:
        detach(raw, args.out)
        return
    if args.report:
        print(report(args.out, publish=args.publish))
        return
    pin_self()
    os.makedirs(args.out, exist_ok=True)
    log("output dir", args.out)
    t0 = time.time()
    timings: dict[str, float] = {}
    parts = list(PARTS) if args.part == "all" else [args.part]
    for part in parts:
        t = time.time()
        log(f"=== part {part}")
        if part == "setup":
            info = setup_tools(need_litellm="litellm" in args.targets)
            log("setup", json.dumps(info))
        elif part in SCENARIOS or part == "smoke":
            part_measure(args, part)
        elif part == "micro":
            part_micro(args)
        elif part == "profile":
            part_profile(args)
        elif part == "soak":
            part_soak(args)
        timings[part] = round(time.time() - t, 1)
        log(f"=== part {part} took {timings[part]:.0f}s")
    with open(os.path.join(args.out, f"timings-{'-'.join(parts)}.json"), "w") as f:
        json.dump(timings, f)
    if args.part in ("setup",):
        return
    print(report(args.out, publish=args.part == "all"))
    log(f"done in {time.time() - t0:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
