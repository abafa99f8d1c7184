"""The exchange symbol rule, in one place: 2-20 ASCII letters or digits, upper-cased."""

from __future__ import annotations

import re

SYMBOL_RULE = "2-20 letters or digits"
SYMBOL_PATTERN = "^[A-Za-z0-9]{2,20}$"  # as JSON Schema writes it (ECMA-262: `$` ends the input)
SYMBOL_RE = re.compile(SYMBOL_PATTERN.removesuffix("$") + r"\Z")  # Python's `$` also passes "BTC\n"


def is_symbol(text: object) -> bool:
    """True for a string that follows the rule, in either case."""
    return isinstance(text, str) and SYMBOL_RE.match(text) is not None


def normalise_symbol(text: object) -> str:
    """The upper-cased symbol; ValueError naming the rule otherwise."""
    if not is_symbol(text):
        raise ValueError(f"must be {SYMBOL_RULE}")
    return str(text).upper()
