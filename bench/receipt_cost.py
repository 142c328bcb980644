"""Per-response cost of the signed receipt (``router.receipts``), timed with ``timeit``.

    sign          Ed25519 signature of a typical payload (``Signer.sign``, OpenSSL via
                  ``cryptography``)
    payload       the canonical JSON payload (orjson, sorted keys)
    batch_N       per receipt, when N responses start in one turn of the event loop and share
                  one signature (``sign_batch``: salts, Merkle tree, signature, base64url);
                  batch_1 is a request at a time
    verify        what a client pays to check one (not on the gateway's path)

Each figure is the median of 7 ``timeit`` repeats, in microseconds per call.

    .venv/bin/python bench/receipt_cost.py [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.receipts import payload, sign_batch, verify_receipt  # noqa: E402
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
    with tempfile.TemporaryDirectory() as tmp:
        signer = load_or_create_signer(Path(tmp))
    data = payload(signer, **FIELDS)
    receipt = sign_batch(signer, [data])[0].decode()
    keys = {signer.key_id: signer.public_pem()}
    result: dict[str, float] = {
        "payload_bytes": len(data),
        "header_bytes": len(receipt),
        "sign_us": per_call_us(lambda: signer.sign(data)),
        "payload_us": per_call_us(lambda: payload(signer, **FIELDS)),
    }
    for size in BATCH_SIZES:
        batch = [data] * size
        result[f"batch_{size}_us"] = round(
            per_call_us(lambda b=batch: sign_batch(signer, b), number=max(20, 2000 // size)) / size,
            2,
        )
    result["verify_us"] = per_call_us(lambda: verify_receipt(receipt, keys), number=500)
    return result


BATCH_SIZES = (1, 4, 16, 64)


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
