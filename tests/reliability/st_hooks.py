"""schemathesis hooks for tests/reliability/test_schemathesis.py (SCHEMATHESIS_HOOKS=st_hooks).

Only one thing: drop "schema-valid request rejected" (ST202) failures whose 400 names
nothing but a documented rule JSON Schema cannot state, or which are a 422
idempotency_conflict (a client_id reused with another body: state, not schema)
(docs/api-conformance.md, "Deliberate deviations"). Every other failure, and any 400 that also names another
field, still fails the run.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

# (field, start of the message) of each documented cross-field or size rule.
DOCUMENTED_RULES = (
    ("entry_time", "must not be after exit_time"),
    ("since", "must not be later than until"),
    ("metadata", "must be at most 16384 bytes"),
    ("metadata", "must not be nested deeper than"),
)


def _documented(detail: dict[str, Any]) -> bool:
    field, message = str(detail.get("field", "")), str(detail.get("message", ""))
    return any(field.startswith(f) and message.startswith(m) for f, m in DOCUMENTED_RULES)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except ST202 on a 400 whose details are all documented rules."""
    if failure.code != "ST202" or response.status_code not in (400, 422):
        return True
    try:
        answer = json.loads(response.content)
        details = answer.get("details") or []
    except (ValueError, AttributeError):
        return True
    if response.status_code == 422:  # a client_id the run already stored with another body
        return bool(answer.get("error") != "idempotency_conflict")
    return not (details and all(_documented(d) for d in details))
