"""The web console on one replica follows a cabinet whose stream is on another: its
device states are stored there, and the console's live states read them again (one read
a second for all its consoles) instead of hearing of each report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orchestrator.config import Console
from provisioning.ca import CertificateAuthority
from tests.conftest import City
from tests.console.conftest import ConsoleCity
from tests.console.test_console_live import live
from tests.replicas.cluster import cluster, override, send
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


async def test_a_console_follows_a_cabinet_streaming_to_another_replica(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    async with cluster(tmp_path, ca, replicas=2) as two:
        streaming, with_console = two.replicas  # the cluster's admin profile is on the first
        # The cabinet connects while the second replica is down: its stream is on the first.
        running, with_console.running = with_console.live, None
        await running.stop(0)
        cabinet = await two.cabinet("dj-remote-1")
        assert two.holding(cabinet.gateway_id) is streaming
        with_console.config = dataclasses.replace(
            with_console.config, console=Console(listen="127.0.0.1:0")
        )
        await two.start_replica(with_console)
        app = with_console.live.app
        city = City(tmp_path, ca, with_console.config, with_console.live, two.city.admin)
        console = ConsoleCity(city, {})
        console.account("desk", "viewer", ["*"])
        client, _ = await console.signed_in("desk")
        async with client, live(client, f"{console.url}/live?gateway=dj-remote-1") as feed:
            await eventually(lambda: feed.states("dj-remote-1"))
            reads = app.console.states.reads  # type: ignore[union-attr]
            await send(two.operator(streaming), cabinet.gateway_id, override("console-1", 30))
            await eventually(lambda: feed.shows("dj-remote-1", "lamp-1", "30 % lit"))
        assert app.hub.session(cabinet.gateway_id) is None  # never heard of here
        assert 1 <= app.console.states.reads - reads <= 15  # type: ignore[union-attr]
