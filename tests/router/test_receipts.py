"""Signed receipts (issue 15), black box through the real gateway on SQLite and PostgreSQL.

Every ``/v1`` response (success, stream, denial, unknown model, bad key, upstream error) carries
``x-provenance-receipt``; ``provenance-router receipt verify`` (the real command line, through
``typer.testing.CliRunner``) accepts it against the published public key and refuses it when
one byte of payload, signature or proof changes. Concurrent responses share one signature
(batch signing) and each still verifies alone. A receipt made before ``signing rotate`` still
verifies against the old key, which stays published; so does a format 1 receipt.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from typer.testing import CliRunner, Result

from router.cli import app
from router.receipts import ReceiptError, published_keys, sign_batch, split, verify_receipt
from router.signing import load_or_create_signer
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, deployment

MESSAGES: Any = [{"role": "user", "content": "Prove where this went."}]
WELL_KNOWN = "/.well-known/provenance-router/signing-keys"


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest,
    gateway_factory: Callable[..., RunningGateway],
    up: FakeUpstream,
) -> RunningGateway:
    gw = gateway_factory(backend=request.param)
    with gw.write() as w:
        w.create("deployment", deployment("receipt-denied", up.base_url))
        w.create("deployment", deployment("receipt-us", up.base_url))
        w.create("route", {"name": "receipted", "candidates": ["receipt-denied", "receipt-us"]})
        w.create("route", {"name": "receipt-all-denied", "candidates": ["receipt-denied"]})
    return gw


@pytest.fixture(autouse=True)
def _fresh_upstream(up: FakeUpstream) -> None:
    up.reset()


def cli(*args: object) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def published(gw: RunningGateway) -> dict[str, Any]:
    with httpx.Client(base_url=gw.url) as anonymous:
        response = anonymous.get(WELL_KNOWN)
    assert response.status_code == 200, response.text
    listing: dict[str, Any] = response.json()
    return listing


def public_keys(gw: RunningGateway) -> dict[str, str]:
    return {k["key_id"]: k["public_key"] for k in published(gw)["data"]}


def receipt_of(gw: RunningGateway, headers: httpx.Headers) -> dict[str, Any]:
    """The verified payload of a response's receipt (checked with the published keys)."""
    return verify_receipt(headers["x-provenance-receipt"], public_keys(gw))


# --- every response carries one -----------------------------------------------------------------


def test_a_success_carries_a_receipt_that_verifies(gw: RunningGateway, tmp_path: Path) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="receipted", messages=MESSAGES
    )
    receipt = raw.headers["x-provenance-receipt"]
    row = gw.decision(raw.headers["x-request-id"])
    listing = published(gw)
    (current,) = [k for k in listing["data"] if k["current"]]
    key_file = tmp_path / "receipt-key.pem"
    key_file.write_text(current["public_key"])

    verified = cli("receipt", "verify", receipt, "--public-key", key_file)

    assert verified.exit_code == 0, verified.output
    payload = orjson.loads(verified.stdout)
    assert payload == {
        "v": 2,
        "kid": listing["current"],
        "rid": raw.headers["x-request-id"],
        "tenant": "apps",
        "model": "receipted",
        "deployment": "receipt-us",
        "policy_version": gw.policy_version,
        "registry_version": row["registry_version"],
        "decision": row["evaluation_id"],
        "status": 200,
        "iat": payload["iat"],
    }
    assert row["evaluation_id"] and payload["deployment"] == raw.headers["x-provenance-deployment"]


def test_the_keys_url_and_the_admin_listing_verify_too(gw: RunningGateway) -> None:
    raw = gw.openai().embeddings.with_raw_response.create(model="receipted", input="x")
    receipt = raw.headers["x-provenance-receipt"]
    with gw.http(gw.keys["no-inference"]) as auditor, gw.http(gw.keys["apps"]) as app_client:
        admin_listing = auditor.get("/admin/signing-keys")
        refused = app_client.get("/admin/signing-keys")

    verified = cli("receipt", "verify", receipt, "--keys-url", gw.url + WELL_KNOWN)

    assert verified.exit_code == 0, verified.output
    assert orjson.loads(verified.stdout)["status"] == 200
    assert admin_listing.status_code == 200 and admin_listing.json() == published(gw)
    assert refused.status_code == 403
    assert "PRIVATE" not in admin_listing.text


def test_a_stream_carries_its_receipt_in_the_headers(gw: RunningGateway) -> None:
    with gw.openai().chat.completions.with_streaming_response.create(
        model="receipted", messages=MESSAGES, stream=True
    ) as response:
        payload = receipt_of(gw, response.headers)
        request_id = response.headers["x-request-id"]
        list(response.iter_lines())
    assert (payload["rid"], payload["deployment"], payload["status"]) == (
        request_id,
        "receipt-us",
        200,
    )
    assert payload["decision"] == gw.decision(request_id)["evaluation_id"]


def test_a_denial_carries_a_receipt(gw: RunningGateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai().chat.completions.create(model="receipt-all-denied", messages=MESSAGES)
    headers = caught.value.response.headers
    payload = receipt_of(gw, headers)
    row = gw.decision(headers["x-request-id"])
    assert (payload["status"], payload["deployment"], payload["model"]) == (
        403,
        None,
        "receipt-all-denied",
    )
    assert payload["decision"] == row["evaluation_id"] is not None


def test_an_upstream_error_carries_a_receipt(gw: RunningGateway, up: FakeUpstream) -> None:
    up.script(["500"])
    with pytest.raises(openai.InternalServerError) as caught:
        gw.openai().chat.completions.create(model="receipted", messages=MESSAGES)
    payload = receipt_of(gw, caught.value.response.headers)
    assert (payload["status"], payload["deployment"], payload["tenant"]) == (502, None, "apps")
    assert payload["decision"] is not None


@pytest.mark.parametrize(
    ("key", "model", "error", "status", "tenant"),
    [
        (
            "pr-not-a-key-000000000000000000000000",
            "receipted",
            openai.AuthenticationError,
            401,
            None,
        ),
        (None, "nobody/nothing", openai.NotFoundError, 404, "apps"),
    ],
)
def test_refusals_before_any_decision_carry_a_receipt_without_a_digest(
    gw: RunningGateway,
    key: str | None,
    model: str,
    error: type[openai.APIStatusError],
    status: int,
    tenant: str | None,
) -> None:
    with pytest.raises(error) as caught:
        gw.openai(key).chat.completions.create(model=model, messages=MESSAGES)
    payload = receipt_of(gw, caught.value.response.headers)
    assert (payload["status"], payload["tenant"], payload["decision"]) == (status, tenant, None)
    assert payload["rid"] == caught.value.response.headers["x-request-id"]


def test_a_model_listing_carries_a_receipt(gw: RunningGateway) -> None:
    raw = gw.openai().models.with_raw_response.list()
    payload = receipt_of(gw, raw.headers)
    assert (payload["status"], payload["model"], payload["deployment"]) == (200, None, None)


# --- tampering ----------------------------------------------------------------------------------


def flip(text: str, index: int) -> str:
    """``text`` with the byte at ``index`` of its decoded bytes changed (re-encoded)."""
    data = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    data[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()


@pytest.mark.parametrize("part", [0, 1, 2], ids=["payload", "signature", "proof"])
@pytest.mark.parametrize("where", [0, -1])
def test_a_receipt_with_one_changed_byte_does_not_verify(
    gw: RunningGateway, part: int, where: int
) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="receipted", messages=MESSAGES
    )
    parts = raw.headers["x-provenance-receipt"].split(".")
    assert len(parts) == 3
    parts[part] = flip(parts[part], where)
    tampered = ".".join(parts)

    refused = cli("receipt", "verify", tampered, "--keys-url", gw.url + WELL_KNOWN)

    assert refused.exit_code == 1, refused.output
    assert "NOT valid" in refused.stderr and refused.stdout == ""


@pytest.mark.anyio
async def test_concurrent_responses_share_one_signature_and_each_verifies(
    gw: RunningGateway,
) -> None:
    """Responses that start in the same turn of the gateway's event loop are signed together
    (one signature over their Merkle tree); each receipt proves its own payload alone, and one
    receipt's proof does not prove another's payload."""
    async with gw.async_openai() as client:
        responses = await asyncio.gather(
            *(
                client.chat.completions.with_raw_response.create(
                    model="receipted", messages=MESSAGES
                )
                for _ in range(24)
            )
        )
    receipts = [r.headers["x-provenance-receipt"] for r in responses]
    keys = public_keys(gw)

    claims = [verify_receipt(receipt, keys) for receipt in receipts]
    signatures = [receipt.split(".")[1] for receipt in receipts]

    assert len({c["rid"] for c in claims}) == 24
    assert len(set(signatures)) < 24  # at least two responses shared a signature
    first, second = (r.split(".") for r in receipts[:2])
    with pytest.raises(ReceiptError):  # a proof is bound to its own payload
        verify_receipt(".".join((second[0], first[1], first[2])), keys)


def test_a_format_1_receipt_still_verifies(gw: RunningGateway, tmp_path: Path) -> None:
    """Receipts issued before batch signing (format 1: the signature covers the payload
    bytes) stay verifiable; a format 1 payload cannot pass as format 2 or the reverse."""
    signer = load_or_create_signer(tmp_path / "old-key")
    claims = {"v": 1, "kid": signer.key_id, "rid": "req_old", "status": 200}
    data = orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)
    old = f"{b64(data)}.{b64(signer.sign(data))}"
    keys = {signer.key_id: signer.public_pem()}

    assert verify_receipt(old, keys) == claims
    with pytest.raises(ReceiptError, match="format version"):
        verify_receipt(old + "." + b64(b"x" * 24), keys)
    current = gw.openai().models.with_raw_response.list().headers["x-provenance-receipt"]
    with pytest.raises(ReceiptError, match="format version"):
        verify_receipt(".".join(current.split(".")[:2]), public_keys(gw))


def test_a_receipt_names_the_size_of_the_tree_its_signature_covers(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "key")
    keys = {signer.key_id: signer.public_pem()}
    payloads = [orjson.dumps({"kid": signer.key_id, "rid": f"r{i}", "v": 2}) for i in range(12)]
    receipts = [r.decode() for r in sign_batch(signer, payloads)]

    assert [verify_receipt(r, keys)["rid"] for r in receipts] == [f"r{i}" for i in range(12)]
    data, signature, proof = receipts[0].split(".")
    raw = bytearray(base64.urlsafe_b64decode(proof + "=" * (-len(proof) % 4)))
    raw[23] += 1  # tree size 12 -> 13: the same path fits, the signed size does not
    with pytest.raises(ReceiptError, match="altered"):
        verify_receipt(f"{data}.{signature}.{b64(bytes(raw))}", keys)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_changed_character_or_garbage_does_not_verify(gw: RunningGateway) -> None:
    raw = gw.openai().models.with_raw_response.list()
    receipt = raw.headers["x-provenance-receipt"]
    keys = public_keys(gw)
    last = receipt[-1]
    other_last = "B" if last == "A" else "A"  # may change only the unused low bits

    for bad in (receipt[:-1] + other_last, receipt + "x", receipt.replace(".", ""), "e30.e30"):
        with pytest.raises(ReceiptError):
            verify_receipt(bad, keys)
    assert split(receipt)[2]["kid"] in keys


# --- rotation -----------------------------------------------------------------------------------


def test_a_receipt_from_before_a_rotation_still_verifies(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    key_dir = tmp_path / "signing"
    before_gw = gateway_factory(signing_key_dir=key_dir)
    old = before_gw.openai().models.with_raw_response.list().headers["x-provenance-receipt"]
    old_kid = split(old)[2]["kid"]

    rotated = cli("signing", "rotate", "--key-dir", key_dir)
    after_gw = gateway_factory(signing_key_dir=key_dir)  # a restart picks up the new key
    new = after_gw.openai().models.with_raw_response.list().headers["x-provenance-receipt"]
    listing = published(after_gw)

    assert rotated.exit_code == 0, rotated.output
    new_kid = split(new)[2]["kid"]
    assert new_kid != old_kid and new_kid in rotated.stdout
    assert listing["current"] == new_kid
    assert {k["key_id"]: k["current"] for k in listing["data"]} == {old_kid: False, new_kid: True}
    for receipt in (old, new):
        verified = cli("receipt", "verify", receipt, "--keys-url", after_gw.url + WELL_KNOWN)
        assert verified.exit_code == 0, verified.output
    assert cli("receipt", "verify", old, "--key-dir", key_dir).exit_code == 0
    new_only = {new_kid: public_keys(after_gw)[new_kid]}
    with pytest.raises(ReceiptError, match="not among the keys"):
        verify_receipt(old, new_only)


def test_a_key_listing_must_name_each_key_by_its_own_id(gw: RunningGateway) -> None:
    listing = published(gw)
    forged = {"data": [{**k, "key_id": "0" * 16} for k in listing["data"]]}

    assert set(published_keys(listing)) == {k["key_id"] for k in listing["data"]}
    with pytest.raises(ReceiptError, match="do not match"):
        published_keys(forged)
