"""/docs: each service's OpenAPI document as a Swagger UI page served by the service itself."""

from __future__ import annotations

import pytest
from flask import Flask

pytestmark = [pytest.mark.unit, pytest.mark.api]


def test_docs_page_loads_only_assets_the_service_serves(memory_app: Flask) -> None:
    client = memory_app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http://" not in html  # no CDN: the page works offline
    assert "https://" not in html
    for asset in ("docs/assets/swagger-ui.css", "docs/assets/swagger-ui-bundle.js", "docs/init.js"):
        assert f'"{asset}"' in html
        served = client.get(f"/{asset}")
        assert served.status_code == 200, asset
        assert len(served.data) > 100, asset
    assert b'url: "openapi.json"' in client.get("/docs/init.js").data  # the same service's document


def test_docs_assets_are_the_listed_files_only(memory_app: Flask) -> None:
    client = memory_app.test_client()
    for name in ("index.html", "..%2Fpyproject.toml", "swagger-ui.js.map", "\u202e" + "x" * 5000):
        answer = client.get(f"/docs/assets/{name}")
        assert answer.status_code == 404
        assert answer.get_json()["error"] == "not_found"
        assert "x" * 100 not in answer.get_data(as_text=True)  # a hostile name is not echoed
