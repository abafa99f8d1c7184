"""The two OpenAPI documents: JSON Schema keywords only, security only where keys exist."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from database_service.openapi import build_openapi as database_document
from websocket_streaming.openapi import build_openapi as streaming_document

pytestmark = pytest.mark.unit

# pydantic's own constraint names: in a document they would be ignored, so the bound unstated.
PYDANTIC_ONLY = {"ge", "le", "gt", "lt", "max_digits", "decimal_places", "strict"}


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


@pytest.mark.parametrize(
    "document", [database_document(), database_document(secured=True), streaming_document()]
)
def test_documents_use_json_schema_keywords_only(document: dict[str, Any]) -> None:
    schemas = [document["components"]["schemas"], *document["paths"].values()]
    assert not PYDANTIC_ONLY & set(_keys(schemas))


def test_key_schemes_are_declared_only_with_keys() -> None:
    open_document, keyed = database_document(), database_document(secured=True)
    assert "securitySchemes" not in open_document["components"]
    assert "security" not in open_document["paths"]["/signals/save"]["post"]
    assert "401" not in open_document["paths"]["/signals/save"]["post"]["responses"]
    assert keyed["paths"]["/signals/save"]["post"]["security"] == [{"apiKey": []}, {"bearer": []}]
    assert "401" in keyed["paths"]["/performance/track"]["post"]["responses"]


def test_every_websocket_streaming_route_is_documented() -> None:
    paths = set(streaming_document()["paths"])
    assert paths == {
        "/",
        "/health",
        "/livez",
        "/readyz",
        "/stats",
        "/metrics",
        "/openapi.json",
        "/symbols",
        "/price/{symbol}",
        "/prices",
        "/stream",
    }
