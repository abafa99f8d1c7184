"""Put an example request and answer into every operation of an OpenAPI document.

Swagger UI (/docs) shows them, and schemathesis' examples phase sends them. Each service
lists its own examples; `add_examples` fails loudly when one names an operation, a
parameter or a status the document does not have, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict


class Example(TypedDict, total=False):
    """The examples of one operation: its body, its parameters by name, its answers by status."""

    body: Any
    parameters: dict[str, Any]
    responses: dict[str, Any]


def add_examples(document: dict[str, Any], examples: Mapping[tuple[str, str], Example]) -> dict[str, Any]:
    """`document` with each operation's examples filled in (KeyError for an unknown name)."""
    for (path, method), example in examples.items():
        operation = document["paths"][path][method]
        if "body" in example:
            operation["requestBody"]["content"]["application/json"]["example"] = example["body"]
        by_name = {p["name"]: p for p in operation.get("parameters", [])}
        for name, value in example.get("parameters", {}).items():
            by_name[name]["example"] = value
        for status, value in example.get("responses", {}).items():
            content = operation["responses"][status]["content"]
            content[next(iter(content))]["example"] = value
    return document
