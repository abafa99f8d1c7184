"""`python -m database_service migrate`: apply pending migrations and exit."""

from __future__ import annotations

import argparse
import sys

from shared.config import ConfigError, exit_on_config_error


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command."""
    parser = argparse.ArgumentParser(prog="python -m database_service")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending database migrations")
    parser.parse_args(argv)
    from database_service import create_app, run_migrations

    try:
        app = create_app({"MIGRATE_ON_START": False})
    except ConfigError as exc:
        exit_on_config_error(exc)
    return run_migrations(app)


if __name__ == "__main__":
    sys.exit(main())
