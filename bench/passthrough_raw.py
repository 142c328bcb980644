"""The ceiling: a raw ASGI passthrough (no framework, no auth, no policy, no audit) on the same
server stack as the gateway (uvicorn + uvloop + httptools) with one shared aiohttp session.

It parses the body once (to find the model) and relays the upstream's bytes, chunk by chunk for
a stream: the least a Python front end can do for an OpenAI request. The gateway's target is
>= 70 % of its throughput.

With ``PASSTHROUGH_CLIENT=http1`` it calls upstreams with the gateway's own HTTP client
(``adapters/http1.py``) instead: target ``raw-http1``, the same passthrough with the client the
gateway uses, so gateway / raw-http1 is what auth, policy, routing, headers and audit cost.

    UPSTREAMS=mock=http://127.0.0.1:18001,mock-slow=http://127.0.0.1:18002 \
        python bench/passthrough_raw.py --port 18103
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import aiohttp
import orjson

DEFAULT = os.environ.get("UPSTREAM_DEFAULT", "http://127.0.0.1:9001").rstrip("/")
UPSTREAMS: dict[str, str] = {}
for item in filter(None, os.environ.get("UPSTREAMS", "").split(",")):
    name, _, base = item.partition("=")
    UPSTREAMS[name.strip()] = base.strip().rstrip("/")
JSON = [(b"content-type", b"application/json")]
session: aiohttp.ClientSession | None = None
HTTP1 = os.environ.get("PASSTHROUGH_CLIENT", "aiohttp") == "http1"
if HTTP1:
    from adapters.http1 import URL, Client, header_lines

    client = Client()
    HEAD = header_lines({"Content-Type": "application/json", "Accept-Encoding": "identity"})
    URLS: dict[str, URL] = {}


async def lifespan(receive: Any, send: Any) -> None:
    global session
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
            )
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            if session is not None:
                await session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        return await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
    body = await read_body(receive)
    try:
        j = orjson.loads(body)
    except orjson.JSONDecodeError:
        await send({"type": "http.response.start", "status": 400, "headers": JSON})
        return await send(
            {"type": "http.response.body", "body": b'{"error":{"message":"invalid json"}}'}
        )
    url = UPSTREAMS.get(j.get("model"), DEFAULT) + scope["path"]
    if HTTP1:
        return await relay_http1(url, body, bool(j.get("stream")), send)
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    assert session is not None
    async with session.post(url, data=body, headers=headers) as r:
        ctype = r.headers.get("content-type", "application/json").encode()
        if j.get("stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": r.status,
                    "headers": [(b"content-type", ctype)],
                }
            )
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            return await send({"type": "http.response.body", "body": b""})
        data = await r.read()
    await send(
        {
            "type": "http.response.start",
            "status": r.status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def relay_http1(url: str, body: bytes, stream: bool, send: Any) -> None:
    target = URLS.get(url) or URLS.setdefault(url, URL.parse(url))
    r = await client.request(b"POST", target, HEAD, body, 60.0)
    ctype = r.headers.get("content-type", "application/json").encode()
    if stream:
        start = {
            "type": "http.response.start",
            "status": r.status,
            "headers": [(b"content-type", ctype)],
        }
        await send(start)
        while chunk := await r.next_chunk():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        return await send({"type": "http.response.body", "body": b""})
    data = await r.read()
    headers = [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": r.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


if __name__ == "__main__":
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9203)
    a = p.parse_args()
    uvicorn.run(
        app,
        host=a.host,
        port=a.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
