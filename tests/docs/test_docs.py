"""The repository explains itself: every path its Markdown names exists, every route is designed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DESIGN = REPO / "docs" / "design.md"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"`([^`\n]+)`")
GIT_LS_FILES = ["git", "ls-files"]
TRACKED = subprocess.run(GIT_LS_FILES, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
TOP_LEVEL = tuple(sorted({f"{name.split('/')[0]}/" for name in TRACKED if "/" in name}))
PLACEHOLDER = re.compile(r"[<>*{}$\[\]]|\.\.\.")
ROUTE_ROW = re.compile(r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*`([^`]+)`", re.MULTILINE)
FLASK_BUILTIN = {"static"}  # Flask's own static-file route: no contract of ours


def markdown_files() -> list[Path]:
    """Every Markdown file git tracks (what someone who clones the repository gets)."""
    return [REPO / name for name in TRACKED if name.endswith(".md")]


def _links(text: str) -> Iterator[str]:
    """Relative link targets of Markdown links, without their #fragment."""
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        yield target.split("#", 1)[0]


def _named_paths(text: str) -> Iterator[str]:
    """Repository paths written in code spans: the first word, when it starts at a top-level folder."""
    for span in CODE.findall(text):
        word = span.split()[0].rstrip(",.:;") if span.split() else ""
        if word.startswith(("../", "/work/")) or (word.startswith(TOP_LEVEL) and not PLACEHOLDER.search(word)):
            yield word


def _missing(path: Path) -> list[str]:
    """Links and named paths of one Markdown file that do not exist in the repository."""
    text = path.read_text()
    found = [(path.parent / target, target) for target in _links(text)]
    found += [(REPO / word, word) for word in _named_paths(text)]
    missing = []
    for resolved, written in found:
        inside = resolved.resolve().is_relative_to(REPO)
        if not inside or not resolved.exists():
            missing.append(f"{path.relative_to(REPO)}: {written}")
    return missing


def test_every_link_and_named_path_in_the_markdown_exists_in_the_repository() -> None:
    files = markdown_files()
    assert DESIGN in files
    assert len(files) > 5
    missing = [entry for path in files for entry in _missing(path)]
    assert missing == []


def test_the_check_catches_a_path_outside_or_absent(tmp_path: Path) -> None:
    page = REPO / "docs" / "_probe_for_test.md"
    page.write_text("See [design](../../shared/DESIGN.md), `docs/no-such.md` and [ok](design.md).\n")
    try:
        assert _missing(page) == [
            "docs/_probe_for_test.md: ../../shared/DESIGN.md",
            "docs/_probe_for_test.md: docs/no-such.md",
        ]
    finally:
        page.unlink()


def test_no_document_points_outside_the_repository() -> None:
    outside = [
        f"{path.relative_to(REPO)}:{number}"
        for path in markdown_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "../shared/" in line or "DESIGN.md" in line
    ]
    assert outside == []


def _designed_routes() -> set[tuple[str, str]]:
    """(method, route) of every row of the design document's route tables, placeholders unnamed."""
    return {(method, _unnamed(route)) for method, route in ROUTE_ROW.findall(DESIGN.read_text())}


def _unnamed(route: str) -> str:
    return re.sub(r"<[^>]*>", "<>", route)


def _served(app: Flask) -> set[tuple[str, str]]:
    """(method, route) of every rule the app serves, as the design document writes them."""
    return {
        (method, _unnamed(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in FLASK_BUILTIN
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    }


def _apps(tmp_path: Path) -> dict[str, Flask]:
    from database_service import create_app as database_app
    from websocket_streaming import create_app as streaming_app

    return {
        "database-service": database_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/d.db"}),
        "websocket-streaming": streaming_app({"TESTING": True, "INGEST_ENABLED": False}),
    }


def test_every_route_either_app_serves_is_in_the_design_document(tmp_path: Path) -> None:
    designed = _designed_routes()
    for name, app in _apps(tmp_path).items():
        assert _served(app) - designed == set(), name


def test_the_route_check_catches_an_undocumented_route(tmp_path: Path) -> None:
    app = _apps(tmp_path)["database-service"]
    app.add_url_rule("/undocumented/<int:n>", "probe", lambda n: "")
    assert _served(app) - _designed_routes() == {("GET", "/undocumented/<>")}
