"""Per-response cost of the signed receipt (``router.receipts.issue``), timed with ``timeit``.

    sign          Ed25519 signature of a typical payload (``Signer.sign``, OpenSSL via
                  ``cryptography``)
    encode        the canonical JSON payload (orjson, sorted keys) and base64url
    issue         the whole receipt as the hot path makes it: encode + sign + base64url
    verify        what a client pays to check one (not on the gateway's path)

Each figure is the median of 7 ``timeit`` repeats, in microseconds per call.

    .venv/bin/python bench/receipt_cost.py [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.receipts import issue, verify_receipt  # noqa: E402
from router.signing import load_or_create_signer  # noqa: E402

FIELDS: dict[str, Any] = {
    "rid": "req_54152d9f4c6d485a000000000001",
    "tenant": "product-x",
    "model": "chat-default",
    "deployment": "llama-3-70b-eu-west-1",
    "policy_version": 12,
    "registry_version": 4711,
    "decision": "9f2c4e8a1b7d3f60a5c2e4b8d1f7a903",
    "status": 200,
}


def per_call_us(fn: Any, number: int = 2000, repeat: int = 7) -> float:
    times = timeit.repeat(fn, number=number, repeat=repeat)
    return round(statistics.median(times) / number * 1e6, 2)


def measure() -> dict[str, float]:
    import orjson

    with tempfile.TemporaryDirectory() as tmp:
        signer = load_or_create_signer(Path(tmp))
    payload = orjson.dumps(
        {"v": 1, "kid": signer.key_id, "iat": int(time.time()), **FIELDS},
        option=orjson.OPT_SORT_KEYS,
    )
    receipt = issue(signer, **FIELDS).decode()
    keys = {signer.key_id: signer.public_pem()}

    def encode() -> bytes:
        body = orjson.dumps(
            {"v": 1, "kid": signer.key_id, "iat": int(time.time()), **FIELDS},
            option=orjson.OPT_SORT_KEYS,
        )
        return base64.urlsafe_b64encode(body).rstrip(b"=")

    return {
        "payload_bytes": len(payload),
        "header_bytes": len(receipt),
        "sign_us": per_call_us(lambda: signer.sign(payload)),
        "encode_us": per_call_us(encode),
        "issue_us": per_call_us(lambda: issue(signer, **FIELDS)),
        "verify_us": per_call_us(lambda: verify_receipt(receipt, keys), number=500),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = measure()
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:>14}  {value}")


if __name__ == "__main__":
    main()
