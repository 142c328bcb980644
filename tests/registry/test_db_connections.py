"""PostgreSQL connections are bounded in time: a server that accepts the TCP connection but
never answers fails the connect after ``connect_timeout_s`` (before: it waited for ever), and
every connection carries TCP keepalives and a send timeout, which the URL may override."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from registry.db import make_engine
from tests.conftest import postgres_url


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that completes TCP handshakes (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_connecting_to_a_server_that_never_answers_gives_up(silent_server: int) -> None:
    engine = make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/test", connect_timeout_s=2
    )
    failures: list[BaseException] = []

    def connect() -> None:
        try:
            engine.connect().close()
        except BaseException as error:  # reported to the test thread
            failures.append(error)

    attempt = threading.Thread(target=connect, daemon=True)
    attempt.start()
    attempt.join(timeout=30)  # generous: the bound is 2 s; without one this never ends
    assert not attempt.is_alive(), "the connect is still waiting"
    assert len(failures) == 1 and isinstance(failures[0], OperationalError)
    engine.dispose()


def _dsn(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            dsn: str = connection.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
    finally:
        engine.dispose()
    return dict(part.split("=", 1) for part in dsn.split())


def test_every_connection_has_keepalives_and_the_url_wins() -> None:
    dsn = _dsn(postgres_url())
    assert dsn["connect_timeout"] == "5"
    assert (dsn["keepalives"], dsn["keepalives_idle"], dsn["tcp_user_timeout"]) == (
        "1",
        "10",
        "30000",
    )
    assert _dsn(f"{postgres_url()}?keepalives_idle=42")["keepalives_idle"] == "42"
