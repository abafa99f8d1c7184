"""gunicorn settings for the support app: the shared hooks, as each service's gunicorn.conf.py uses them."""

from __future__ import annotations

from shared.gunicorn_hooks import configure

configure(globals(), "support-app")
