"""``ondijon demo``: it never wipes what it did not make, and its commands run on its clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.agent import Agent, make_clock
from edge.config import AgentConfig
from ondijon.admin import lamp_override
from ondijon.cli import main
from ondijon.demo import MARKER, DemoError, _agent_toml, demo_clock, prepare_directory
from orchestrator.fleet.commands import check_command_envelope
from protos.ondijon.v1 import link_pb2
from provisioning.profile import Profile
from tests.conftest import offline_agent_config

# -- the directory --------------------------------------------------------------------------


def test_a_directory_with_the_users_files_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("four years of work")
    assert main(["demo", "--dir", str(mine), "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ondijon: error: --dir: ") and "not made by the demo" in err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    assert (mine / "thesis.tex").read_text() == "four years of work"


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-run"
    path.write_text("not a directory")
    with pytest.raises(DemoError) as caught:
        prepare_directory(path)
    assert caught.value.field == "--dir"
    assert path.read_text() == "not a directory"


def test_a_symlink_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / MARKER).write_text("")
    (target / "keep").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(DemoError):
        prepare_directory(link)
    assert (target / "keep").exists()


def test_the_demos_own_directory_is_wiped_and_marked_again(tmp_path: Path) -> None:
    root = tmp_path / "a" / "demo-run"
    prepare_directory(root)  # created, parents too
    assert [p.name for p in root.iterdir()] == [MARKER]
    (root / "orchestrator.db").write_text("old run")
    (root / "ca").mkdir()
    (root / "ca" / "root.key").write_text("old key")
    prepare_directory(root)
    assert [p.name for p in root.iterdir()] == [MARKER]


def test_an_empty_directory_is_taken(tmp_path: Path) -> None:
    prepare_directory(tmp_path)
    assert (tmp_path / MARKER).is_file()


# -- the clock ------------------------------------------------------------------------------


def demo_profile(tmp_path: Path, ran_for: timedelta, speed: float) -> Profile:
    """A profile as the demo writes it, for a demo started ``ran_for`` ago."""
    Profile.write(
        tmp_path / "profile", address="localhost:7443", key_pem=b"", chain_pem=b"", root_pem=b""
    )
    clock = demo_clock(datetime.now(UTC) - ran_for, speed)
    Profile.set_clock(tmp_path / "profile", clock)
    (tmp_path / "agent.toml").write_text(
        _agent_toml(
            tmp_path, "talant-mairie", 47.3, 5.0, "cabinet", "localhost:1", "localhost:2", clock
        )
    )
    return Profile.load(tmp_path / "profile")


@pytest.mark.parametrize(
    ("ran_for", "speed"),
    [
        (timedelta(0), 120),
        (timedelta(minutes=3), 120),
        (timedelta(minutes=10), 120),
        (timedelta(minutes=4), 600),
    ],
)
def test_the_profile_and_the_agents_read_one_street_time(
    tmp_path: Path, ran_for: timedelta, speed: float
) -> None:
    profile = demo_profile(tmp_path, ran_for, speed)
    agent_clock = make_clock(AgentConfig.load(tmp_path / "agent.toml"))
    # Both read the demo's start plus the real time since the demo began, times the speed
    # (10 minutes at x120: 20 hours on, past midnight at the sites).
    expected = datetime.now(UTC) - ran_for
    expected = demo_clock(expected, speed).start + ran_for * speed
    for clock in (profile.clock, agent_clock):
        assert abs(clock.now() - expected) < timedelta(seconds=speed * 2)
    assert abs(profile.clock.now() - agent_clock.now()) < timedelta(seconds=speed * 0.5)


async def test_an_override_typed_against_the_demo_is_applied_not_expired(tmp_path: Path) -> None:
    # Ten real minutes into the demo its street clock is 20 hours past its start.
    profile = demo_profile(tmp_path, timedelta(minutes=10), 120)
    street = make_clock(AgentConfig.load(tmp_path / "agent.toml"))
    lamps = '[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60'
    (tmp_path / "a").mkdir()
    agent = Agent(offline_agent_config(tmp_path / "a", "demo-1", lamps), street)
    try:
        on_real_time = lamp_override(80, 30, 10, [])
        assert (await agent.handle_command(on_real_time)).status == (
            link_pb2.COMMAND_STATUS_EXPIRED
        )  # what the CLI did before: real time against the demo's fast clock

        command = lamp_override(80, 30, 10, [], clock=profile.clock)
        # The orchestrator, on real time, takes it ...
        assert check_command_envelope(command, datetime.now(UTC)) == ""
        # ... and the agent, on the street's time, applies it for 30 street minutes.
        assert (await agent.handle_command(command)).status == link_pb2.COMMAND_STATUS_DONE
        agent.apply_schedule()
        assert [lamp.controller.level for lamp in agent.lamps] == [80]
        start = command.override.start.ToDatetime(tzinfo=UTC)
        assert abs(start - street.now()) < timedelta(minutes=2)
        expiry = command.override.expiry.ToDatetime(tzinfo=UTC)
        assert expiry - start == timedelta(minutes=30)
    finally:
        agent.close()
