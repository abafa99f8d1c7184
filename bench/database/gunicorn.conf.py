"""Gunicorn settings of the minimal baseline: exactly the services' shared settings (gthread)."""

from shared.gunicorn_hooks import configure

configure(globals(), "bench-database-minimal")
loglevel = "warning"
