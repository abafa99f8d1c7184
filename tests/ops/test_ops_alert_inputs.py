"""A metric the alert rules read that the services did not export before: each /health
check's status, measured at every scrape (SardagDatabaseUnavailable reads it). The other,
sardag_ws_leader, is checked across two real instances in test_ops_topology.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

NO_SERVERS = {"REDIS_URL": None, "SENTRY_DSN": None}


def health_metric(text: str, check: str, status: str) -> float | None:
    """Value of sardag_health_check{check=..., status=...} in a /metrics answer."""
    for line in text.splitlines():
        if (
            line.startswith("sardag_health_check{")
            and f'check="{check}"' in line
            and f'status="{status}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize(
    ("url", "status"),
    [("sqlite:///{tmp}/ok.db", "ok"), ("postgresql://postgres@127.0.0.1:1/unreachable", "down")],
)
def test_database_check_is_measured_at_every_scrape(tmp_path: Path, url: str, status: str) -> None:
    from database_service import create_app

    app = create_app({**NO_SERVERS, "DATABASE_URL": url.format(tmp=tmp_path)})
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert health_metric(text, "database", status) == 1.0, text
    others = {"ok", "degraded", "down"} - {status}
    assert all(health_metric(text, "database", other) == 0.0 for other in others)
