"""Serve providers that do not speak the OpenAI protocol (Anthropic, Bedrock, Vertex) via LiteLLM.

Why LiteLLM's SDK and not its proxy: the SDK translates one request into any provider's API
without a second server (its proxy adds ~10 ms and 300 MB). Why imported lazily: importing
``litellm`` takes seconds and 100+ MB, so a gateway that only routes to OpenAI-compatible
backends never imports it. The first ``send()`` imports it in a worker thread (the event loop
keeps serving); ``await adapter.load()`` does it ahead of time.

``target.upstream_model`` is the LiteLLM model string (``"anthropic/claude-..."``,
``"hosted_vllm/name"``); it is required, because a client-chosen model string would let the
client pick a provider the policy never allowed. The client's other JSON fields are passed
through, except those LiteLLM reads as client configuration (``api_base``, ``api_key``,
``extra_headers``, ``mock_response``...): a request must not redirect a call or swap credentials.
``target.extra`` holds operator-set LiteLLM arguments (e.g. ``api_version``, ``aws_region_name``).

Answers come back in OpenAI shape: JSON bytes, or SSE frames ending with ``data: [DONE]``.
Errors: LiteLLM reports a refused or dropped connection as ``InternalServerError`` (500) with the
transport error as its cause, so the mapping inspects the cause chain before the status code.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from adapters.base import (
    BackendTarget,
    Endpoint,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamResponse,
    UpstreamTimeout,
    redact,
)

# Request fields a client may not set: they configure the LiteLLM call, not the model.
_CONTROL_FIELDS = frozenset(
    {
        "model",
        "stream",
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "organization",
        "deployment_id",
        "custom_llm_provider",
        "extra_headers",
        "headers",
        "timeout",
        "max_retries",
        "num_retries",
        "client",
        "shared_session",
        "model_list",
        "mock_response",
    }
)
_FUNCTIONS: Mapping[Endpoint, str] = {
    "chat/completions": "acompletion",
    "completions": "atext_completion",
    "embeddings": "aembedding",
}
_DONE = b"data: [DONE]\n\n"


class LiteLLMAdapter:
    """Adapter for kind ``litellm``. Create one per process: LiteLLM's module state (its
    client cache, the shared HTTP client this adapter installs) is global."""

    def __init__(self) -> None:
        self._litellm: Any = None
        self._http: Any = None
        self._owned_fields: frozenset[str] = frozenset()
        self._errors: _ErrorKinds | None = None

    async def load(self) -> None:
        """Import LiteLLM now (idempotent), quietly and without network access."""
        if self._litellm is not None:
            return
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        litellm: Any = await asyncio.to_thread(importlib.import_module, "litellm")
        if self._litellm is not None:  # a concurrent first call finished loading meanwhile
            return
        litellm.telemetry = False
        litellm.suppress_debug_info = True
        litellm.turn_off_message_logging = True  # prompts never reach LiteLLM's logs
        # LiteLLM builds a new, never-closed HTTP client per call on some OpenAI-route paths
        # (e.g. non-stream text completions) unless this shared one is set: one pool, ours
        # to close.
        self._http = _shared_http_client()
        litellm.aclient_session = self._http
        owned = importlib.import_module("litellm.types.utils").all_litellm_params
        self._owned_fields = frozenset(owned)
        self._errors = _ErrorKinds.load()
        self._litellm = litellm

    async def send(
        self,
        target: BackendTarget,
        endpoint: Endpoint,
        raw: bytes,
        body: dict[str, object],
        stream: bool,
    ) -> UpstreamResponse:
        await self.load()
        stream = stream and endpoint != "embeddings"
        call = getattr(self._litellm, _FUNCTIONS[endpoint])
        arguments = self._arguments(target, body, stream)
        try:
            result = await call(**arguments)
        except Exception as exc:
            raise self._map_error(exc, target) from exc
        if stream:
            relay = _SSERelay(result, lambda exc: self._map_error(exc, target))
            return UpstreamResponse(status=200, content_type="text/event-stream", chunks=relay)
        return UpstreamResponse(
            status=200, content_type="application/json", body=orjson.dumps(result.model_dump())
        )

    async def health(self, target: BackendTarget) -> bool:
        """True once LiteLLM is importable. Providers have no free, neutral probe (a test
        completion costs money), so real failures are left to the router's circuit breaker."""
        try:
            await self.load()
        except ImportError:
            return False
        return True

    async def close(self) -> None:
        """Close every HTTP client LiteLLM holds (a later ``send()`` loads again)."""
        litellm, self._litellm = self._litellm, None
        if litellm is None:
            return
        await litellm.close_litellm_async_clients()
        litellm.in_memory_llm_clients_cache.flush_cache()
        if litellm.aclient_session is self._http:
            litellm.aclient_session = None
        await self._http.aclose()

    def _arguments(
        self, target: BackendTarget, body: Mapping[str, object], stream: bool
    ) -> dict[str, Any]:
        if not target.upstream_model:
            raise ValueError(f"litellm deployment {target.deployment_id} has no upstream_model")
        arguments: dict[str, Any] = {
            key: value
            for key, value in body.items()
            if key not in _CONTROL_FIELDS and key not in self._owned_fields
        }
        arguments.update(target.extra)
        arguments.update(model=target.upstream_model, timeout=target.timeout_s, max_retries=0)
        if stream:
            arguments["stream"] = True
        if target.base_url:
            arguments["api_base"] = target.base_url
        if target.api_key:
            arguments["api_key"] = target.api_key
        return arguments

    def _map_error(self, exc: Exception, target: BackendTarget) -> UpstreamError:
        assert self._errors is not None, "load() runs before any call"
        return self._errors.map(exc, target.deployment_id, target.api_key)


class _ErrorKinds:
    """The exception classes that mean "timed out" or "connection failed", from the libraries
    LiteLLM sits on (imported only after LiteLLM itself)."""

    def __init__(
        self,
        timeouts: tuple[type[BaseException], ...],
        disconnects: tuple[type[BaseException], ...],
    ) -> None:
        self.timeouts = timeouts
        self.disconnects = disconnects

    @classmethod
    def load(cls) -> _ErrorKinds:
        import aiohttp
        import httpx
        import openai

        timeouts = (TimeoutError, openai.APITimeoutError, httpx.TimeoutException)
        disconnects = (
            ConnectionError,
            openai.APIConnectionError,
            httpx.TransportError,
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
        )
        return cls(timeouts, disconnects)

    def map(self, exc: Exception, deployment_id: str, api_key: str | None = None) -> UpstreamError:
        """The contract's error for a LiteLLM failure; its text (the provider's words) with
        the deployment's key redacted."""
        message = redact(f"{deployment_id}: {_message(exc)}", (api_key,))
        chain = list(_causes(exc))
        if any(isinstance(e, self.timeouts) for e in chain):
            return UpstreamTimeout(message, deployment_id=deployment_id)
        if any(isinstance(e, self.disconnects) for e in chain):
            return UpstreamConnectError(message, deployment_id=deployment_id)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= 400:
            body = _error_envelope(_message(exc), status)
            return UpstreamHTTPError(
                message, status=status, body=body, deployment_id=deployment_id, secrets=(api_key,)
            )
        return UpstreamError(message, deployment_id=deployment_id)


class _SSERelay:
    """Re-encodes LiteLLM's stream chunks as OpenAI SSE frames, then ``data: [DONE]``.

    A class (not an async generator) so that ``aclose()`` closes the provider stream even if
    iteration never started."""

    __slots__ = ("_map_error", "_stream")

    def __init__(self, stream: Any, map_error: Callable[[Exception], UpstreamError]) -> None:
        self._stream: Any = stream
        self._map_error = map_error

    def __aiter__(self) -> _SSERelay:
        return self

    async def __anext__(self) -> bytes:
        if self._stream is None:
            raise StopAsyncIteration
        try:
            chunk = await anext(self._stream)
        except StopAsyncIteration:
            await self.aclose()
            return _DONE
        except Exception as exc:
            await self.aclose()
            raise self._map_error(exc) from exc
        return b"data: " + orjson.dumps(chunk.model_dump()) + b"\n\n"

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        # A text-completion wrapper has no aclose(); the chat stream inside it does.
        target = stream if hasattr(stream, "aclose") else getattr(stream, "completion_stream", None)
        close = getattr(target, "aclose", None)
        if close is not None:
            await close()


def _shared_http_client() -> Any:
    import httpx

    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=128)
    return httpx.AsyncClient(limits=limits, timeout=None)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what caused it, down the chain (cycle-safe)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc or type(exc).__name__)


def _error_envelope(message: str, status: int) -> bytes:
    if status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "api_error"
    else:
        kind = "invalid_request_error"
    error = {"message": message, "type": kind, "param": None, "code": None}
    return orjson.dumps({"error": error})
