"""A real orchestrator with its console on an HTTPS port, operators with console
passwords, and (for browser tests) Debian's Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from foundation.clock import SystemClock
from orchestrator.config import Console
from orchestrator.identity.operators import set_console_password
from orchestrator.server import start
from provisioning import totp
from provisioning.ca import CertificateAuthority
from tests.conftest import City, need, orchestrator_config

CHROMIUM = os.environ.get("ONDIJON_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "lanterne-de-la-place-darcy"
# Every screen a browser test reaches is saved here (gitignored), to look at after a run.
SCREENS = Path(__file__).resolve().parents[2] / "test-screens"
# `ONDIJON_SCREENSHOTS=docs` also retakes the README's pictures; a plain run writes nothing
# tracked.
README_SHOTS = os.environ.get("ONDIJON_SCREENSHOTS", "")


async def shoot(page: Any, name: str, *, readme: bool = False) -> None:
    """Save the page as ``test-screens/<name>.png``; a README picture (``readme``) also
    into ``$ONDIJON_SCREENSHOTS`` when that is set."""
    SCREENS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)
    if readme and README_SHOTS:
        await page.screenshot(path=str(Path(README_SHOTS) / f"{name}.png"), full_page=True)


@dataclass
class ConsoleCity:
    city: City
    secrets: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.city.running.console_port}"

    def account(self, name: str, role: str, communes: list[str]) -> str:
        """An operator with a console password; returns its TOTP secret."""
        self.city.operator(name, role, communes)
        secret = set_console_password(
            self.city.config, name=name, password=PASSWORD, now=datetime.now(UTC)
        )
        self.secrets[name] = secret
        return secret

    def code(self, name: str, steps_ahead: int = 0) -> str:
        """The code the operator's app shows now (or a step ahead: a code may be used
        once, and a test signing in twice within 30 s needs the next one)."""
        return totp.code_at(self.secrets[name], time.time() + 30 * steps_ahead)

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.city.ca.root_pem.decode())
        return context

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=kwargs.pop("ssl", self.tls())),
            cookie_jar=aiohttp.CookieJar(),
            **kwargs,
        )

    async def signed_in(
        self, name: str, *, steps_ahead: int = 0, code: str = ""
    ) -> tuple[aiohttp.ClientSession, str]:
        """A client signed in as ``name`` (with ``code``, or the one its app shows now),
        and its CSRF token."""
        client = self.client()
        form_token = await sign_in_form(client, self.url)
        async with client.post(
            f"{self.url}/sign-in",
            data={
                "form_token": form_token,
                "name": name,
                "password": PASSWORD,
                "code": code or self.code(name, steps_ahead),
            },
            allow_redirects=False,
        ) as answer:
            assert answer.status == 303, await answer.text()
        async with client.get(f"{self.url}/") as page:
            text = await page.text()
        csrf = text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        return client, csrf


async def sign_in_form(client: aiohttp.ClientSession, url: str) -> str:
    async with client.get(f"{url}/sign-in") as page:
        text = await page.text()
    return text.split('name="form_token" value="', 1)[1].split('"', 1)[0]


@contextlib.asynccontextmanager
async def started_console(
    tmp_path: Path, ca: CertificateAuthority, **console: Any
) -> AsyncIterator[ConsoleCity]:
    config = replace(
        orchestrator_config(tmp_path), console=Console(listen="127.0.0.1:0", **console)
    )
    running = await start(config, SystemClock(), ca=ca)
    city = City(tmp_path, ca, config, running, admin=None)  # type: ignore[arg-type]
    city.admin = city.operator("admin", "admin", ["*"])
    try:
        yield ConsoleCity(city, {})
    finally:
        await city.running.stop(0)


@pytest.fixture
async def console(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[ConsoleCity]:
    async with started_console(tmp_path, ca) as started:
        yield started


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium driven by Playwright (Playwright's own browser download is not
    reachable from here): headless, one per test."""
    need(os.path.exists(CHROMIUM), f"Chromium is not installed at {CHROMIUM}")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()
