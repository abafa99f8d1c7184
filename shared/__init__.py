"""Sardag shared library: the pieces both services are built from."""

from __future__ import annotations

__version__ = "0.1.0"
