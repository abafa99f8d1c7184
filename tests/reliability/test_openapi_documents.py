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
        "/docs",
        "/docs/init.js",
        "/docs/assets/{name}",
        "/symbols",
        "/price/{symbol}",
        "/prices",
        "/stream",
        "/candles/{symbol}",
    }


def _defaults(node: Any) -> Iterator[tuple[Any, Any]]:
    """(type, default) of every schema in `node` that declares a default."""
    if isinstance(node, dict):
        if "default" in node and isinstance(node.get("type"), str):
            yield node["type"], node["default"]
        for value in node.values():
            yield from _defaults(value)
    elif isinstance(node, list):
        for value in node:
            yield from _defaults(value)


def test_a_default_has_its_schemas_type() -> None:
    # pydantic writes a Decimal default as a string ("default": "1" on a number)
    python_type = {"number": (int, float), "integer": (int,), "string": (str,), "boolean": (bool,)}
    found = [*_defaults(database_document()), *_defaults(streaming_document())]
    assert ("number", 1) in found  # the trade's quantity
    for kind, default in found:
        assert isinstance(default, python_type[kind]), (kind, default)
        assert kind == "boolean" or not isinstance(default, bool), (kind, default)


def test_idempotency_conflicts_and_identical_repeats_are_documented() -> None:
    paths = database_document()["paths"]
    for operation in (paths["/signals/save"]["post"], paths["/performance/track"]["post"]):
        assert "idempotency_conflict" in operation["responses"]["422"]["description"]
        assert "server's clock" in operation["description"]  # what "identical" means


@pytest.mark.parametrize(
    "document", [database_document(), database_document(secured=True), streaming_document()]
)
def test_every_operation_has_an_example_request_and_answer(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            answers = [c for r in operation["responses"].values() for c in r.get("content", {}).values()]
            assert any("example" in c for c in answers), where
            body = operation.get("requestBody")
            if body is not None:
                assert "example" in body["content"]["application/json"], where
            for parameter in operation.get("parameters", []):
                if parameter.get("required"):
                    assert "example" in parameter, (where, parameter["name"])
            assert (
                body is not None
                or not operation.get("parameters")
                or any("example" in p for p in operation["parameters"])
            ), where
