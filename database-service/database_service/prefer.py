"""`Prefer: return=minimal` (RFC 7240) on the saving routes: ids instead of the stored rows.

Only `return` is honoured. RFC 7240 section 2: preference names compare case-insensitively
and values exactly; only the first occurrence of a preference counts; a preference the
server does not know or cannot apply is ignored, never an error. `Preference-Applied`
names what was applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Response, jsonify, request

RETURN_VALUES = ("minimal", "representation")
MINIMAL_NOTE = (
    "With the header `Prefer: return=minimal` (RFC 7240) the answer is a SaveSummary: count, "
    "created and the ids in request order, with `Preference-Applied: return=minimal`. Other or "
    "repeated preferences are ignored as RFC 7240 says (the first `return` counts), never an error."
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def preferences(headers: Iterable[str]) -> dict[str, str]:
    """Each preference of the Prefer header lines: lower-cased name -> value ("" for none).

    The first occurrence of a name wins; parameters (after `;`) and malformed items are dropped.
    """
    found: dict[str, str] = {}
    for header in headers:
        for item in _split(header, ","):
            name, _, value = _split(item, ";")[0].partition("=")
            name = name.strip()
            if _TOKEN.fullmatch(name) and name.lower() not in found:
                found[name.lower()] = _unquote(value.strip())
    return found


def _split(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside double-quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    quoted = _QUOTED.fullmatch(value)
    return re.sub(r"\\(.)", r"\1", quoted[1]) if quoted else value


def return_preference() -> str | None:
    """`minimal` or `representation` when this request's Prefer asks for it, else None."""
    value = preferences(request.headers.getlist("Prefer")).get("return")
    return value if value in RETURN_VALUES else None


def saved(
    results: list[tuple[dict[str, Any], bool]], full: Callable[[], Any], preference: str | None
) -> tuple[Response, int]:
    """The answer to a save: `full()` or, minimal, count, created and ids; 201 if any row is new."""
    created = sum(1 for _, new in results if new)
    if preference == "minimal":
        body: Any = {"count": len(results), "created": created, "ids": [row["id"] for row, _ in results]}
    else:
        body = full()
    response = jsonify(body)
    if preference is not None:
        response.headers["Preference-Applied"] = f"return={preference}"
    return response, 201 if created else 200
