"""The node's session: connecting, backing off, obeying, storing, reporting, refusing.

Runs on CPython and MicroPython with an in-memory client (memory_client.py); the same
code against a real Mosquitto is tests/edge/fieldbus/test_fieldbus_nodes.py.
"""

from edge.node import bus
from edge.node.program import Program
from edge.node.ticks import ManualTicks
from tests.edge.node.memory_client import MemoryClient, started_node
from tests.edge.node.portable import scratch_dir

T0 = 1774699200  # 2026-03-28 12:00 UTC
CAB = "ondijon/v1/cab-01/"
ME = CAB + "node/n-0001/"


def _t(topic):
    return topic.encode()


def _program(number, levels=(0, 100, 50)):
    return Program(number, T0, 86400, [0, 3600, 7200][: len(levels)], levels)


def test_a_node_says_hello_subscribes_and_reports():
    client = MemoryClient()
    link = started_node(scratch_dir(), client=client)
    assert client.will == (_t(ME + "presence"), b'{"up":0}', True)
    assert sorted(client.subscriptions) == sorted(
        [_t(CAB + "gateway"), _t(ME + "cmd"), _t(ME + "program")]
    )
    assert bus.decode_presence(client.published_on(b"/presence")[0]) == (True, "0.1.0")
    state = bus.decode_state(client.published_on(b"/state")[-1])
    assert (state.level, state.mode, state.program) == (80, "d", 0)
    assert link.lamp.level == 80


def test_commands_are_obeyed_while_the_gateway_lives_and_held_for_the_fallback_time():
    ticks = ManualTicks()
    client = MemoryClient()
    link = started_node(scratch_dir(), ticks=ticks, client=client)
    client.send(_t(CAB + "gateway"), bus.encode_heartbeat(T0))
    client.send(_t(ME + "cmd"), bus.encode_command(30, 7), retain=True)
    link.poll()
    assert (link.lamp.level, link.mode) == (30, "c")
    state = bus.decode_state(client.published_on(b"/state")[-1])
    assert (state.level, state.mode, state.command) == (30, "c", 7)
    ticks.advance(299_000)
    link.poll()
    assert link.lamp.level == 30
    ticks.advance(1_000)
    link.poll()
    assert (link.lamp.level, link.mode) == (80, "d")


def test_unreachable_broker_backs_off_exponentially_and_the_lamp_stays_lit():
    ticks = ManualTicks()
    client = MemoryClient()
    client.reachable = False
    link = started_node(scratch_dir(), ticks=ticks, client=client)
    assert client.connects == 1 and link.lamp.level == 80
    waits = []
    for _ in range(8):
        before = client.connects
        waited = 0
        while client.connects == before:
            ticks.advance(100)
            waited += 100
            link.poll()
        waits.append(waited)
    # jitter 0.5 gives 75 % of 1, 2, 4 ... s, capped at 60 s
    assert waits == [800, 1500, 3000, 6000, 12000, 24000, 45000, 45000], waits
    client.reachable = True
    ticks.advance(45_000)
    link.poll()
    assert link.connected and link.lamp.level == 80


def test_a_broken_session_is_reopened_and_the_retained_program_is_not_written_again():
    ticks = ManualTicks()
    client = MemoryClient()
    flash_dir = scratch_dir()
    link = started_node(flash_dir, ticks=ticks, client=client)
    client.send(_t(ME + "program"), bus.encode_program(_program(3)), retain=True)
    link.poll()
    assert link.flash.writes == 1
    for _ in range(5):
        client.fail_next = True
        link.poll()
        assert not link.connected
        ticks.advance(10)
        link.poll()
        assert link.connected
    assert link.connections == 6
    assert link.flash.writes == 1
    assert link.luminaire.program.number == 3


def test_an_older_or_conflicting_program_is_refused_and_changes_nothing():
    client = MemoryClient()
    link = started_node(scratch_dir(), client=client)
    client.send(_t(ME + "program"), bus.encode_program(_program(5)), retain=True)
    link.poll()
    client.send(_t(ME + "program"), bus.encode_program(_program(4, (100,))), retain=True)
    client.send(_t(ME + "program"), bus.encode_program(_program(5, (100,))), retain=True)
    link.poll()
    assert link.refused == 2
    assert link.last_refusal.field == "program.n"
    assert link.luminaire.program.same_as(_program(5))
    assert link.flash.writes == 1
    client.send(_t(ME + "program"), bus.encode_program(_program(6, (100,))), retain=True)
    link.poll()
    assert link.luminaire.program.number == 6 and link.flash.writes == 2


def test_invalid_messages_are_refused_and_change_nothing():
    client = MemoryClient()
    link = started_node(scratch_dir(), client=client)
    client.send(_t(CAB + "gateway"), bus.encode_heartbeat(T0))
    client.send(_t(ME + "cmd"), bus.encode_command(40, 1))
    link.poll()
    sent = len(client.published)
    for topic, payload in [
        (ME + "cmd", b'{"l":140,"s":2}'),
        (ME + "cmd", b"off"),
        (ME + "program", b'{"n":9,"t0":1774699200,"e":60,"p":[[5,0]]}'),
        (CAB + "gateway", b'{"t":12}'),
        ("ondijon/v1/cab-02/node/n-0001/cmd", bus.encode_command(0, 3)),
        (ME + "state", bus.encode_command(0, 3)),
    ]:
        client.subscriptions.append(_t(topic))
        client.send(_t(topic), payload)
    link.poll()
    assert link.refused == 6
    assert (link.lamp.level, link.luminaire.command_seq) == (40, 1)
    assert link.luminaire.program is None and link.flash.writes == 0
    assert len(client.published) == sent  # nothing changed, nothing to report


def test_state_goes_out_on_change_and_periodically_and_pings_keep_an_idle_session():
    ticks = ManualTicks()
    client = MemoryClient()
    link = started_node(scratch_dir(), ticks=ticks, client=client)
    reports = len(client.published_on(b"/state"))
    for _ in range(59):  # 59 s: the keepalive is 120 s, a ping is due after 60 s idle
        ticks.advance(1000)
        link.poll()
    assert len(client.published_on(b"/state")) == reports and client.pings == 0
    ticks.advance(1000)
    link.poll()
    assert client.pings == 1
    for _ in range(240):
        ticks.advance(1000)
        link.poll()
    assert len(client.published_on(b"/state")) == reports + 1  # the 300 s report
    link.lamp.failed = True
    for _ in range(3):
        ticks.advance(1000)
        link.poll()
    state = bus.decode_state(client.published_on(b"/state")[-1])
    assert state.faults == ("lamp",) and state.power_w == 0.0


def test_the_node_survives_its_reboot_with_its_program_and_the_board_clock():
    ticks = ManualTicks()
    client = MemoryClient()
    flash_dir = scratch_dir()
    link = started_node(flash_dir, ticks=ticks, client=client)
    client.send(_t(ME + "program"), bus.encode_program(_program(3)), retain=True)
    link.poll()

    class Clock:
        def __init__(self, now):
            self.t = now

        def now(self):
            return self.t

        def set(self, t):
            self.t = t

    # rebooted, gateway gone: the RTC kept time (soft reset) -> the program's level
    again = started_node(flash_dir, client=MemoryClient(), rtc=Clock(T0 + 7300))
    assert (again.lamp.level, again.mode) == (50, "p")
    again = started_node(flash_dir, client=MemoryClient(), rtc=Clock(T0 + 3700))
    assert (again.lamp.level, again.mode) == (100, "p")
    # the RTC lost power too (reads 2000-01-01): no time, so the default level
    dark = started_node(flash_dir, client=MemoryClient(), rtc=Clock(946684800))
    assert (dark.lamp.level, dark.mode) == (80, "d")
    assert again.flash.writes == 1


def test_a_flash_that_cannot_be_written_is_reported_and_the_program_runs_from_ram():
    client = MemoryClient()
    link = started_node(scratch_dir() + "/missing", client=client)
    client.send(_t(CAB + "gateway"), bus.encode_heartbeat(T0 + 3700))
    client.send(_t(ME + "program"), bus.encode_program(_program(3)), retain=True)
    link.poll()
    state = bus.decode_state(client.published_on(b"/state")[-1])
    assert state.faults == ("flash",)
    assert (state.level, state.mode, state.program) == (100, "p", 3)
