"""Render a bench report's HTML page to a PNG (the picture in hil_tests/README.md).

    .venv/bin/python hil_tests/render_report.py hil-report/report.html docs/bench-report.png

Uses Playwright with the machine's Chromium (``/usr/bin/chromium``, or ``CHROMIUM``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def render(page_file: Path, picture: Path, *, width: int = 960, height: int = 900) -> None:
    """Screenshot the top ``width`` x ``height`` of ``page_file`` into ``picture``."""
    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.resolve().as_uri())
            page.screenshot(path=str(picture))
        finally:
            browser.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    render(Path(sys.argv[1]), Path(sys.argv[2]))
