"""Every ``ondijon campaign`` and ``ondijon release`` command that asks the orchestrator
prints what others wrote escaped: a gateway's running version and outcome detail, an
operator's pause and abort reasons (ondijon/firmware_cli.py, SECURITY.md "Text from
outside escaped"). A real orchestrator over mutual TLS; the gateway is a hand-driven
stream that says what an attacker holding its key would."""

from __future__ import annotations

import asyncio

import pytest

from edge.link import PROTOCOL_REVISION
from ondijon.cli import main
from protos.ondijon.v1 import firmware_pb2, link_pb2
from tests.conftest import City
from tests.firmware_e2e.conftest import Releases
from tests.ondijon.test_firmware_cli import HOSTILE, raw_controls
from tests.security.conftest import enrolled, gateway_channel, stream
from tests.waiting import eventually

pytestmark = pytest.mark.integration

Stage = firmware_pb2.FirmwareStage


async def test_every_campaign_and_release_command_prints_outside_text_escaped(
    city: City, releases: Releases, capsys: pytest.CaptureFixture[str]
) -> None:
    config = await enrolled(city, "dj-001")
    await releases.upload(releases.build("0.2.0"))
    profile = ["--profile", str(city.admin.directory)]

    async def run(*argv: str) -> str:
        capsys.readouterr()
        assert await asyncio.to_thread(main, [*argv, *profile]) == 0
        out = capsys.readouterr().out
        assert raw_controls(out) == [], (argv, out)
        return out

    async with gateway_channel(city, config) as chan, stream(chan) as s:
        hello = link_pb2.Hello(protocol_revision=PROTOCOL_REVISION, firmware_version=HOSTILE)
        s.send(link_pb2.ConnectRequest(hello=hello))
        assert (await s.recv()).WhichOneof("body") == "welcome"
        created = await run(
            "campaign", "create", "0.2.0", "--id", "c-1", "--gateway", "dj-001", "--waves", "100",
            "--allow-night",
        )  # fmt: skip
        assert created.startswith("c-1 ")
        while (await s.recv()).WhichOneof("body") != "firmware_offer":
            pass
        s.send(
            link_pb2.ConnectRequest(
                firmware_progress=firmware_pb2.FirmwareProgress(
                    campaign_id="c-1",
                    version="0.2.0",
                    stage=Stage.FIRMWARE_STAGE_DOWNLOADING,
                    bytes_done=100,
                    detail=HOSTILE,
                    running_version=HOSTILE,
                )
            )
        )

        async def reported() -> bool:
            outcome = await releases.outcome("c-1", "dj-001")
            return outcome.stage == Stage.FIRMWARE_STAGE_DOWNLOADING

        await eventually(reported)
        shown = await run("campaign", "show", "c-1")
        assert "downloading 100 B" in shown and "ok\\nforged line\\x1b]0;owned\\x07" in shown
        paused = await run("campaign", "pause", "c-1", "--reason", HOSTILE)
        assert "\\x1b[2J\\x9b31m\\u202egnp.exe" in paused
        assert len(paused.splitlines()) == len(shown.splitlines()) + 1  # one history line more
        listed = await run("campaign", "list")
        header, row = listed.splitlines()  # a header and one campaign: no line added
        assert header.startswith("CAMPAIGN ") and "paused" in row
        resumed = await run("campaign", "resume", "c-1")
        assert "\\x1b[2J\\x9b31m\\u202egnp.exe" in resumed
        aborted = await run("campaign", "abort", "c-1", "--reason", HOSTILE)
        assert aborted.count("\\u202egnp.exe") >= 2  # the pause and the abort reasons
    listed = await run("release", "list")
    header, row = listed.splitlines()
    assert header.startswith("VERSION ") and row.startswith("0.2.0 ")
