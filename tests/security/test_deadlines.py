"""Calls held open, handshakes left unfinished, knocks with revoked certificates: what a
peer can hold on the orchestrator, and for how long (orchestrator/access/admission.py, server.py).

Every attack here comes from another client host than the honest peers it must not
hurt: an :class:`AddressProxy` reaches the orchestrator from 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from foundation.clock import SystemClock
from ondijon.client import AdminClient, AdminError
from orchestrator.access.admission import certificate_key
from orchestrator.server import start
from protos.ondijon.v1 import control_pb2, enrollment_pb2
from provisioning.ca import CertificateAuthority
from tests.conftest import City, orchestrator_config
from tests.security.conftest import (
    CONNECT,
    another_host,
    channel,
    codes_of,
    enrolled,
    gateway_channel,
    held_calls,
    relax,
    revoked_and_enrolled_again,
    serial_of,
    stream,
)
from tests.waiting import eventually

pytestmark = pytest.mark.integration

ENROLL = "/ondijon.v1.Enrollment/Enroll"
RENEW = "/ondijon.v1.Enrollment/Renew"
GET_CRL = "/ondijon.v1.Enrollment/GetCrl"


async def get_crl(address: str, root_pem: bytes) -> enrollment_pb2.GetCrlResponse:
    async with channel(address, root_pem) as chan:
        raw = await chan.unary_unary(GET_CRL)(
            enrollment_pb2.GetCrlRequest().SerializeToString(), timeout=5
        )
    return enrollment_pb2.GetCrlResponse.FromString(raw)


async def test_calls_held_open_without_a_request_do_not_block_enrollment(city: City) -> None:
    relax(city.running.app, request_timeout_s=1.0)
    async with (
        another_host(city.running.enroll_port) as proxy,
        channel(proxy.address, city.ca.root_pem) as attacker,
    ):
        held = held_calls(attacker, ENROLL, 64)
        await asyncio.sleep(0.3)
        # Everyone else is served meanwhile: the CRL, and an installer's enrollment.
        crl = await get_crl(city.enroll_address, city.ca.root_pem)
        assert crl.crl_number > 0
        await enrolled(city, "dj-late")
        started = time.perf_counter()
        codes = await codes_of(held, timeout=5)
        ended_after = time.perf_counter() - started
    # A few are held (the address's calls at once) until the request deadline, the rest
    # are refused at once; none is left open.
    cap = city.running.app.rates.anonymous_calls_at_once
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == cap
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 64 - cap
    assert ended_after < 3.0


async def test_a_gateway_cannot_hold_calls_open_without_requests(city: City) -> None:
    relax(city.running.app, request_timeout_s=1.0)
    config = await enrolled(city, "dj-001")
    admission = city.running.admission
    assert admission is not None
    key = certificate_key("spiffe://ondijon/gateway/dj-001", serial_of(config))
    async with gateway_channel(city, config) as chan:
        held = held_calls(chan, RENEW, 300)
        # The cap is reached as soon as the channel's handshake is done and the first calls
        # arrive (a fixed 0.3 s was not always enough on a loaded machine): held at the cap.
        cap = city.running.app.rates.calls_at_once
        await eventually(lambda: admission.calls.count(key) >= cap, timeout=5, every=0.01)
        assert admission.calls.count(key) == cap
        codes = await codes_of(held, timeout=5)
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == city.running.app.rates.calls_at_once
    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert admission.calls.count(key) == 0


async def test_a_unary_call_is_answered_within_its_deadline(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    relax(city.running.app, call_timeout_s=0.5)
    store = city.running.app.runner.store
    listed = store.list_gateways

    def stuck(*args: object, **kwargs: object) -> object:
        time.sleep(2.0)  # a store that stopped answering
        return listed(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "list_gateways", stuck)
    started = time.perf_counter()
    with pytest.raises(AdminError) as caught:
        await AdminClient(city.admin).list_gateways(control_pb2.ListGatewaysRequest())
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details == "call: not answered within 0.5 s"
    assert time.perf_counter() - started < 1.5


@contextlib.contextmanager
def raw_connections_held(port: int, count: int) -> Iterator[list[object]]:
    import socket

    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def test_unfinished_tls_handshakes_are_closed(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    running = await start(
        orchestrator_config(tmp_path, handshake_timeout_s=1.0), SystemClock(), ca=ca
    )
    try:
        for port in (running.port, running.enroll_port):
            with raw_connections_held(port, 100) as socks:
                # Half a ClientHello on some, nothing at all on the others.
                for sock in socks[::2]:
                    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # type: ignore[attr-defined]
                await asyncio.sleep(2.5)
                closed = 0
                for sock in socks:
                    sock.setblocking(False)  # type: ignore[attr-defined]
                    try:
                        closed += sock.recv(4096) == b""  # type: ignore[attr-defined]
                    except BlockingIOError:
                        pass  # still open: nothing to read
                    except ConnectionResetError:
                        closed += 1
                assert closed == len(socks), f"{len(socks) - closed} handshakes still open"
    finally:
        await running.stop(0)


async def test_a_revoked_certificate_cannot_use_up_its_gateways_budgets(city: City) -> None:
    # Budgets small enough that 25 knocks would use them up, were they counted.
    relax(city.running.app, stream_open_burst=5, stream_opens_per_s=0.001, call_burst=10)
    config = await enrolled(city, "dj-001")
    stolen = await revoked_and_enrolled_again(city, config)

    async with (
        another_host(city.running.port) as proxy,
        channel(proxy.address, stolen.root_pem, stolen.key_pem, stolen.chain_pem) as thief,
    ):
        for _ in range(25):
            async with stream(thief) as s:
                s.send_raw(b"")
                assert await s.closing_status() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await thief.unary_unary(RENEW)(b"", timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

    # The gateway's current certificate has every budget intact.
    async with gateway_channel(city, config) as chan:
        for _ in range(3):
            async with stream(chan) as s:
                welcome = await s.hello()
                assert welcome.gateway_id == "dj-001"
    admission = city.running.admission
    assert admission is not None
    stolen_key = certificate_key("spiffe://ondijon/gateway/dj-001", format_serial(stolen))
    assert admission.streams.count(admission.stream_key(stolen_key, CONNECT)) == 0


def format_serial(credentials: object) -> str:
    from provisioning.ca import load_certs

    chain = credentials.chain_pem  # type: ignore[attr-defined]
    return format(load_certs(chain, "gateway.pem")[0].serial_number, "x")
