"""Gunicorn settings of the bench: exactly the services' shared settings (gthread)."""

from shared.gunicorn_hooks import configure

configure(globals(), "bench-rate-limit")
loglevel = "warning"
