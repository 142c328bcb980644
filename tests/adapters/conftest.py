"""Fixtures for adapter tests.

Async tests run on asyncio through anyio's pytest plugin. The real local model is started once
per session (only when a ``slow`` test asks for it) and shared by every module that needs it.
"""

from collections.abc import Iterator

import pytest

from adapters.local_llamacpp import LocalModelServer
from tests.fakes import fake_upstream

__all__ = ["anyio_backend", "fake_upstream", "local_model"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModelServer]:
    with LocalModelServer() as server:
        yield server
