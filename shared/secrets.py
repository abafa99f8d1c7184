"""The secret strings of a running service, masked wherever text leaves the process.

One `Secrets` per process-wide sink: the log handler's formatter and Sentry's `before_send`
hold the same object, and the API-key loader adds every key it reads, so a key loaded at
run time is masked from then on (and stays masked after it is retired).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

MASK = "***"
MIN_MASKED_LENGTH = 4  # shorter "secrets" would mask ordinary words; docs/security.md says so


class Secrets:
    """A growing set of secret strings and the masking of text and nested data by them."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._forms: tuple[str, ...] = ()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Mask `values` from now on (each as written and as it appears inside JSON text)."""
        forms = set(self._forms)
        for value in values:
            if len(value) >= MIN_MASKED_LENGTH:
                forms.update({value, json.dumps(value)[1:-1]})
        with self._lock:  # longest first: a secret containing another is masked whole
            self._forms = tuple(sorted(forms, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._forms)

    def mask(self, text: str) -> str:
        """`text` with every secret replaced by `***`."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def mask_deep(self, value: Any) -> Any:
        """`value` (JSON-like: dicts, lists, strings) with every string masked, keys too."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_deep(k): self.mask_deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_deep(v) for v in value]
        return value
