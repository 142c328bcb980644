"""The tools the run needs and the versions it records: wrk, the tools venv (LiteLLM proxy,
py-spy), the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from typing import Any

from bench.harness.config import LITELLM_PIN, PY, PYSPY_PIN, ROOT, TOOLS_VENV, log
from bench.harness.procs import pinnable


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
