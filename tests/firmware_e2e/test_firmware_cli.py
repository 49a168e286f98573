"""``ondijon release`` from a release manager's shell: key, build, sign, upload, list."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from edge.firmware.simulator import make_wheel
from ondijon.cli import main
from tests.conftest import City

pytestmark = pytest.mark.integration


async def test_a_release_goes_from_a_wheel_to_the_orchestrator(
    city: City, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "release.key"
    name, wheel = make_wheel("0.3.0")
    (tmp_path / name).write_bytes(wheel)
    out = tmp_path / "releases"
    profile = ["--profile", str(city.admin.directory)]

    def ondijon(*args: str) -> int:
        return main(list(args))

    assert ondijon("release", "keygen", str(key)) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ondijon("release", "build", str(tmp_path / name), "--out", str(out)) == 0
    release = out / "ondijon-0.3.0"
    # Unsigned: the orchestrator is never asked.
    assert await asyncio.to_thread(ondijon, "release", "upload", str(release), *profile) == 2
    assert "is not signed" in capsys.readouterr().err
    assert ondijon("release", "sign", str(release), "--key", str(key)) == 0
    assert await asyncio.to_thread(ondijon, "release", "upload", str(release), *profile) == 0
    assert await asyncio.to_thread(ondijon, "release", "list", *profile) == 0
    listed = capsys.readouterr().out
    assert "release 0.3.0 uploaded" in listed and listed.splitlines()[-1].startswith("0.3.0")
    # Releases are immutable: the same version again is refused.
    assert await asyncio.to_thread(ondijon, "release", "upload", str(release), *profile) == 2
    assert "ALREADY_EXISTS" in capsys.readouterr().err
