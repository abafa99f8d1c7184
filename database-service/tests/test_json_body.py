"""Request bodies: the fast decoder gives json.loads' values, and what it refuses is answered
as json.loads answers it (database_service.parsing.json_body)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from database_service.parsing import json_body
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import APIError

pytestmark = pytest.mark.unit

APP = Flask(__name__)  # json_body reads flask.request only: a bare app's request context is enough


def decode(raw: bytes) -> Any:
    """json_body of a request whose body is `raw`."""
    with APP.test_request_context(method="POST", data=raw, content_type="application/json"):
        return json_body()


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (1 == 1.0 == True would hide a difference)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (a == b or (isinstance(a, Decimal) and str(a) == str(b)))


numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str).map(json.loads),
)
# valid UTF-8 without NUL (a NUL or a lone surrogate is a validation error: the last test)
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400)
@given(values, st.booleans())
def test_a_body_decodes_to_what_json_loads_makes_of_it(value: Any, spaced: bool) -> None:
    text = json.dumps(value, indent=1 if spaced else None, ensure_ascii=False)
    assert same(decode(text.encode()), json.loads(text, parse_float=Decimal))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',  # the last of repeated keys
        b"123456789012345678901234567890123456789",  # beyond 64 bits
        b"-0.0",
        b"1E2",
        b"1e400",  # no double holds it; a Decimal does
        b"1.00000000000000000000000001",
        b'"\\ud83d\\ude00"',  # an escaped surrogate pair
    ],
)
def test_edge_numbers_and_keys_decode_as_json_loads_does(raw: bytes) -> None:
    assert same(decode(raw), json.loads(raw, parse_float=Decimal))


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (b"NaN", "invalid_json", "numbers must be finite"),
        (b'{"price": Infinity}', "invalid_json", "numbers must be finite"),
        (b"1e99999999999999999999", "invalid_json", "exponent is out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json", "nested too deeply"),
        (b'{"price": 1,}', "invalid_json", "Malformed JSON"),
        (b"", "invalid_json", "Malformed JSON"),
        (b"\xff", "invalid_json", "not UTF-8"),
        (b'{"s": "\\ud800"}', "validation_error", "must be valid Unicode"),  # a lone surrogate
        (b'{"s": "\\u0000"}', "validation_error", "must not contain NUL"),
    ],
)
def test_what_the_fast_decoder_refuses_is_answered_400_as_json_loads_answers_it(
    raw: bytes, code: str, message: str
) -> None:
    with pytest.raises(APIError) as refused:
        decode(raw)
    assert (refused.value.status, refused.value.code) == (400, code)
    assert message in refused.value.message
