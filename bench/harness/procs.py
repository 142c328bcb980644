"""Processes this run starts and the machine they run on: pinning, ports, RSS and CPU readers
(/proc), start/stop, a tiny HTTP client and readiness polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from bench.harness.config import CLIENT_CPU, CLK, DROP, ROOT, SERVER_CPU, log


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
        try:  # the child has its own copy of the log file; ours is closed even if it fails
            popen = subprocess.Popen(
                argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd or ROOT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        finally:
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
