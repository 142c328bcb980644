"""The tools the run needs and the versions it records: wrk, the tools venv (LiteLLM proxy,
py-spy), the machine."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
from typing import Any

from bench.harness.config import (
    LITELLM_PIN,
    PORTKEY_PACKAGE,
    PORTKEY_VERSION,
    PY,
    PYSPY_PIN,
    ROOT,
    TOOLS_VENV,
    log,
)
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


def portkey_dir(out: str) -> str:
    """Portkey's gateway lives in a folder of the run's output dir, never in the repository."""
    return os.path.join(out, "portkey")


def portkey_entry(out: str) -> str:
    package = os.path.join(portkey_dir(out), "node_modules", *PORTKEY_PACKAGE.split("/"))
    return os.path.join(package, "build", "start-server.js")


def portkey_version(out: str) -> str | None:
    """The installed version, or None when it is not installed (or unreadable)."""
    manifest = os.path.join(os.path.dirname(os.path.dirname(portkey_entry(out))), "package.json")
    try:
        with open(manifest) as f:
            return str(json.load(f)["version"])
    except (OSError, ValueError, KeyError):
        return None


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "missing"
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()


def install_portkey(out: str) -> dict[str, Any]:
    """npm install of the pinned version into ``<out>/portkey`` (once per output dir).
    ``--ignore-scripts``: its only install script is patch-package, whose patches the package
    does not ship; nothing else of the registry runs on this machine."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return {"portkey": "missing (node and npm are needed)"}
    if portkey_version(out) != PORTKEY_VERSION:
        log(f"installing {PORTKEY_PACKAGE}@{PORTKEY_VERSION} into {portkey_dir(out)} (npm)")
        os.makedirs(portkey_dir(out), exist_ok=True)
        command = [npm, "install", "--prefix", portkey_dir(out), "--no-audit", "--no-fund"]
        command += ["--ignore-scripts", f"{PORTKEY_PACKAGE}@{PORTKEY_VERSION}"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return {
        "portkey": portkey_version(out),
        "portkey_dir": portkey_dir(out),
        "node": node_version(),
    }


def setup_tools(
    need_litellm: bool = True, need_portkey: bool = False, out: str = ""
) -> dict[str, Any]:
    """wrk (apt, when root and missing), the tools venv (LiteLLM proxy + py-spy) and Portkey's
    gateway (npm, into ``out``), pinned."""
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
    if need_portkey:
        info.update(install_portkey(out))
    return info


def versions(out_dir: str = "") -> dict[str, str]:
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
    if out_dir and portkey_version(out_dir):
        v["portkey"], v["node"] = str(portkey_version(out_dir)), node_version()
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
