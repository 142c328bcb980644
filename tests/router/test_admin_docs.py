"""Issue 20: the interactive API references (Swagger UI at ``/admin/docs``, ReDoc at
``/admin/redoc``) work on an air-gapped host: their HTML names no other host, and every
script, style and icon it refers to is served by the gateway itself, with its content type."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from tests.router.conftest import RunningGateway

CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


class References(HTMLParser):
    """Every ``src`` and ``href`` in a page, and any URL in its inline scripts' strings."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(v for k, v in attrs if k in ("src", "href", "spec-url") and v)
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


@pytest.mark.parametrize("page", ["/admin/docs", "/admin/redoc"])
def test_api_reference_loads_nothing_from_another_host(
    gateway_factory: Callable[..., RunningGateway], page: str
) -> None:
    gw = gateway_factory(seeded=False)
    with httpx.Client(base_url=gw.url, timeout=10.0) as http:
        response = http.get(page)
        assert response.status_code == 200
        parser = References()
        parser.feed(response.text)
        assert parser.urls, response.text
        for url in parser.urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{page} loads {url}"
        inline = "".join(parser.scripts)
        assert "http://" not in inline and "https://" not in inline, inline
        assets = [u for u in parser.urls if not u.endswith("openapi.json")]
        assert any(u.endswith(".js") for u in assets), assets
        for url in assets:
            asset = http.get(url)
            assert asset.status_code == 200, url
            suffix = url[url.rindex(".") :]
            assert asset.headers["content-type"].startswith(CONTENT_TYPES[suffix]), url
            assert len(asset.content) > 1000, url
        assert http.get("/admin/openapi.json").status_code == 200
