"""What every part of the harness shares: paths, pins, CPUs, targets, scenarios and bodies."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/
ROOT = os.path.dirname(HERE)
PY = sys.executable
TOOLS_VENV = os.environ.get("BENCH_TOOLS_VENV", "/tmp/pr-bench-litellm")
LITELLM_PIN = "litellm[proxy]==1.106.2"  # 1.82.7 / 1.82.8 were malicious: exact pin only
PYSPY_PIN = "py-spy==0.4.3"
# Portkey's open-source gateway (Node), installed with npm into the run's own folder (issue 18)
PORTKEY_PACKAGE, PORTKEY_VERSION = "@portkey-ai/gateway", "1.15.2"
SERVER_CPU, CLIENT_CPU = 0, 1
CLK = os.sysconf("SC_CLK_TCK")
DROP = "\0drop"  # an env value that removes the variable from a child's environment
ALL_TARGETS = ("direct", "gateway", "raw-asgi", "raw-http1", "litellm", "portkey")
# the subject and the floor: a run without them measures nothing, so their failures stop it;
# any other target that fails to start or to answer is recorded and its cells say why
REQUIRED_TARGETS = ("direct", "gateway")
# the full run, in order
PARTS = ("setup", "nonstream", "stream", "other", "micro", "profile", "workers")
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
BODIES: dict[str, dict[str, Any]] = {
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
