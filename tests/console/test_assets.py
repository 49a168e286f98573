"""The console's vendored front-end libraries are exactly what package-lock.json installs."""

from __future__ import annotations

from pathlib import Path

from orchestrator.console import assets
from tests.conftest import need


def test_vendored_assets_match_node_modules() -> None:
    node_modules = assets.ROOT / "node_modules"
    need((node_modules / "leaflet").is_dir(), "node_modules is not installed (npm ci)")
    assert assets.differences(node_modules) == []


def test_the_console_pages_reference_only_vendored_or_own_files() -> None:
    from orchestrator.console import pages
    from orchestrator.console.words import words

    html = pages.layout(words("fr"), "t", "", lang="fr", who="alice", role="viewer")
    for src in html.split('src="')[1:] + html.split('href="')[1:]:
        path = src.split('"', 1)[0]
        if path.startswith("/static/"):
            assert (Path(assets.VENDOR).parent / path.removeprefix("/static/")).is_file(), path
        else:
            assert not path.startswith(("http:", "https:", "//")), path
