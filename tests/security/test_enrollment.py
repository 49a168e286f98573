"""Enrollment over real TLS: one-time tokens, bound to the serial, expiring; refusals that
change nothing and are audited; a failure budget per address; re-enrollment supersedes
the earlier certificate; keys and tokens never reach a log (orchestrator/identity/enrollment.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import edge.identity
from edge.identity import EnrollmentError, enroll, load_credentials
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, enrollment_pb2, enrollment_pb2_grpc
from provisioning.ca import make_csr, new_private_key
from provisioning.tokens import new_token, token_digest
from tests.conftest import City
from tests.security.conftest import (
    ClockedCity,
    audit_rows,
    channel,
    enrolled,
    gateway_channel,
    relax,
    snapshot,
    stream,
)

pytestmark = pytest.mark.integration


async def raw_enroll(city: City, **fields: object) -> grpc.StatusCode:
    request = enrollment_pb2.EnrollRequest(
        csr_pem=make_csr(new_private_key(), "x"),
        **fields,  # type: ignore[arg-type]
    )
    async with channel(city.enroll_address, city.ca.root_pem) as chan:
        try:
            await enrollment_pb2_grpc.EnrollmentStub(chan).Enroll(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_a_token_works_once(city: City) -> None:
    token = await city.register("dj-001")
    config = city.agent_config("dj-001")
    await enroll(config, token)
    before = snapshot(city.running.app)
    with pytest.raises(EnrollmentError, match="PERMISSION_DENIED: token: already used"):
        await enroll(config, token)
    assert snapshot(city.running.app) == before
    refused = [r for r in audit_rows(city.running.app) if r["result"] == "refused"]
    assert [r["action"] for r in refused] == ["gateway.enroll"]
    assert refused[0]["target"] == "dj-001" and refused[0]["commune"] == "Dijon"


async def test_a_token_is_bound_to_its_gateway_and_serial(city: City) -> None:
    token_1 = await city.register("dj-001")
    token_2 = await city.register("dj-002")
    before = snapshot(city.running.app)
    # Another gateway's token, and the right token from a device with another serial.
    assert (
        await raw_enroll(city, gateway_id="dj-001", serial="SN-dj-001", token=token_2)
        is grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        await raw_enroll(city, gateway_id="dj-001", serial="SN-stolen", token=token_1)
        is grpc.StatusCode.PERMISSION_DENIED
    )
    assert snapshot(city.running.app) == before
    details = [r["detail"] for r in audit_rows(city.running.app) if r["result"] == "refused"]
    assert "token: unknown enrollment token for this gateway" in details[0]
    assert "serial: the token is bound to another device serial" in details[1]
    # Both tokens are still good for their own device.
    assert (
        await raw_enroll(city, gateway_id="dj-001", serial="SN-dj-001", token=token_1)
        is grpc.StatusCode.OK
    )


async def test_an_expired_token_is_refused(clocked_city: ClockedCity) -> None:
    city = clocked_city
    token = await city.register("dj-001")
    city.clock.advance(city.config.token_ttl_hours * 3600 + 1)
    with pytest.raises(EnrollmentError, match="token: expired"):
        await enroll(city.agent_config("dj-001"), token)


async def test_a_broken_request_does_not_burn_the_token(city: City) -> None:
    token = await city.register("dj-001")
    before = snapshot(city.running.app)
    async with channel(city.enroll_address, city.ca.root_pem) as chan:
        stub = enrollment_pb2_grpc.EnrollmentStub(chan)
        for bad in (
            {"csr_pem": b"not a csr"},
            {"csr_pem": b""},
            {"serial": ""},
            {"gateway_id": "../etc"},
            {"token": "t" * 300},
        ):
            fields = {
                "gateway_id": "dj-001",
                "serial": "SN-dj-001",
                "token": token,
                "csr_pem": make_csr(new_private_key(), "x"),
            } | bad
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Enroll(enrollment_pb2.EnrollRequest(**fields), timeout=10)  # type: ignore[arg-type]
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details().split(":")[0] in {
                "csr_pem",
                "serial",
                "gateway_id",
                "token",
            }
    assert snapshot(city.running.app) == before
    await enroll(city.agent_config("dj-001"), token)


async def test_an_address_that_keeps_failing_is_made_to_wait(city: City) -> None:
    relax(city.running.app, enroll_failure_burst=3, enroll_failures_per_s=0.001)
    token = await city.register("dj-001")
    codes = [
        await raw_enroll(city, gateway_id="dj-001", serial="SN-dj-001", token=f"guess-{i}")
        for i in range(4)
    ]
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    # Even the right token waits: the address is out of budget.
    assert (
        await raw_enroll(city, gateway_id="dj-001", serial="SN-dj-001", token=token)
        is grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    relax(city.running.app)
    assert (
        await raw_enroll(city, gateway_id="dj-001", serial="SN-dj-001", token=token)
        is grpc.StatusCode.OK
    )


async def test_enrolling_again_supersedes_the_earlier_certificate(city: City) -> None:
    config = await enrolled(city, "dj-001")
    old = load_credentials(config)
    fresh = await AdminClient(city.admin).issue_enrollment_token(
        control_pb2.IssueEnrollmentTokenRequest(gateway_id="dj-001"),
    )
    await enroll(config, fresh.enrollment_token)
    assert load_credentials(config).key_pem != old.key_pem
    # The earlier key and certificate (a stolen copy, say) no longer get a link.
    stolen = channel(city.address, old.root_pem, old.key_pem, old.chain_pem)
    async with stolen as chan, stream(chan) as s:
        s.send_raw(b"")
        assert await s.closing_status() is grpc.StatusCode.UNAUTHENTICATED
    async with gateway_channel(city, config) as chan, stream(chan) as s:
        assert (await s.hello()).gateway_id == "dj-001"


async def test_the_key_stays_on_the_gateway_with_mode_0600(city: City) -> None:
    config = await enrolled(city, "dj-001")
    assert os.stat(config.key_file).st_mode & 0o777 == 0o600
    key_body = load_credentials(config).key_pem.split(b"\n")[1]
    # Nothing the orchestrator stored holds the key.
    assert key_body.decode() not in repr(snapshot(city.running.app, skip=()))


async def test_keys_and_tokens_never_appear_in_logs(
    city: City, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await city.register("dj-001")
    config = city.agent_config("dj-001")
    await raw_enroll(city, gateway_id="dj-001", serial="SN-dj-001", token=token + "x")
    await raw_enroll(city, gateway_id="dj-001", serial="SN-other", token=token)
    await enroll(config, token)
    with pytest.raises(EnrollmentError):
        await enroll(config, token)
    async with gateway_channel(city, config) as chan:
        await enrollment_pb2_grpc.EnrollmentStub(chan).Renew(
            enrollment_pb2.RenewRequest(csr_pem=make_csr(new_private_key(), "dj-001"))
        )
    fresh = await AdminClient(city.admin).issue_enrollment_token(
        control_pb2.IssueEnrollmentTokenRequest(gateway_id="dj-001"),
    )
    await AdminClient(city.admin).revoke_gateway(
        control_pb2.RevokeGatewayRequest(gateway_id="dj-001")
    )
    secrets = [token, fresh.enrollment_token]
    secrets += [
        line
        for pem in (
            load_credentials(config).key_pem,
            (city.config.state_dir / "server.key").read_bytes(),
        )
        for line in pem.decode().splitlines()
        if "PRIVATE KEY" not in line
    ]
    captured = capfd.readouterr()
    text = caplog.text + captured.out + captured.err
    assert "enrolled" in caplog.text and "revoked" in caplog.text  # the logs did speak
    leaked = [s for s in secrets if s in text]
    assert not leaked
    audit_text = repr(audit_rows(city.running.app))
    assert not [s for s in secrets if s in audit_text]


def test_tokens_are_unguessable_recognisable_and_safe_on_a_command_line() -> None:
    tokens = {new_token()[0] for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(t.startswith("odjn_") and len(t) == 48 for t in tokens)
    token, digest = new_token()
    assert digest == token_digest(token) and token not in digest


async def test_an_unknown_gateway_and_a_wrong_token_are_answered_alike(city: City) -> None:
    relax(city.running.app, enroll_failure_burst=1000)
    await city.register("dj-001")
    answers: dict[str, set[tuple[grpc.StatusCode, str]]] = {"unknown": set(), "wrong": set()}
    times: dict[str, list[float]] = {"unknown": [], "wrong": []}
    async with channel(city.enroll_address, city.ca.root_pem) as chan:
        stub = enrollment_pb2_grpc.EnrollmentStub(chan)
        for i in range(40):  # interleaved, so the machine's noise falls on both alike
            for kind, gateway_id in (("unknown", f"dj-{500 + i}"), ("wrong", "dj-001")):
                request = enrollment_pb2.EnrollRequest(
                    gateway_id=gateway_id,
                    serial=f"SN-{gateway_id}",
                    token=new_token()[0],
                    csr_pem=make_csr(new_private_key(), "x"),
                )
                started = time.perf_counter()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Enroll(request, timeout=10)
                times[kind].append(time.perf_counter() - started)
                answers[kind].add((caught.value.code(), caught.value.details()))
    assert (
        answers["unknown"]
        == answers["wrong"]
        == {(grpc.StatusCode.PERMISSION_DENIED, "token: unknown enrollment token for this gateway")}
    )
    unknown, wrong = statistics.median(times["unknown"]), statistics.median(times["wrong"])
    print(f"refusal median ms: unknown gateway {unknown * 1e3:.2f}, wrong token {wrong * 1e3:.2f}")
    assert abs(unknown - wrong) < max(0.003, 0.5 * min(unknown, wrong))


async def test_guesses_sent_at_once_are_held_to_the_budget(city: City) -> None:
    relax(
        city.running.app,
        enroll_failure_burst=20,
        enroll_failures_per_s=0.001,
        anonymous_calls_at_once=1000,
    )
    await city.register("dj-001")
    codes = await asyncio.gather(
        *(
            raw_enroll(city, gateway_id="dj-001", serial="SN-dj-001", token=f"guess-{i}")
            for i in range(60)
        )
    )
    evaluated = codes.count(grpc.StatusCode.PERMISSION_DENIED)
    assert evaluated == 20, f"{evaluated} guesses evaluated against a budget of 20"
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 40
    refused = [r for r in audit_rows(city.running.app) if r["action"] == "gateway.enroll"]
    assert len(refused) == 20


async def test_a_key_tls_cannot_use_is_refused_before_the_token_is_spent(city: City) -> None:
    token = await city.register("dj-001")
    before = snapshot(city.running.app)
    for curve in (ec.SECP256K1(), ec.SECP224R1()):
        key = ec.generate_private_key(curve)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with channel(city.enroll_address, city.ca.root_pem) as chan:
                await enrollment_pb2_grpc.EnrollmentStub(chan).Enroll(
                    enrollment_pb2.EnrollRequest(
                        gateway_id="dj-001",
                        serial="SN-dj-001",
                        token=token,
                        csr_pem=make_csr(key, "dj-001"),  # type: ignore[arg-type]
                    ),
                    timeout=10,
                )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith(f"csr_pem: EC keys on {curve.name} are refused")
    assert snapshot(city.running.app) == before
    await enroll(city.agent_config("dj-001"), token)  # the token still works


async def test_a_broken_csr_is_refused_in_our_words_only(city: City) -> None:
    token = await city.register("dj-001")
    half = make_csr(new_private_key(), "x")
    for bad in (
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        half[: len(half) // 2],
        b"\x00" * 100,
    ):
        async with channel(city.enroll_address, city.ca.root_pem) as chan:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await enrollment_pb2_grpc.EnrollmentStub(chan).Enroll(
                    enrollment_pb2.EnrollRequest(
                        gateway_id="dj-001", serial="SN-dj-001", token=token, csr_pem=bad
                    ),
                    timeout=10,
                )
        details = caught.value.details()
        assert details == "csr_pem: not a PEM certificate request", details
    await enroll(city.agent_config("dj-001"), token)


async def test_an_enrollment_cut_before_its_answer_is_retried_with_the_same_token(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await city.register("dj-001")
    config = city.agent_config("dj-001")

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the installer's process dies with the answer in flight

    monkeypatch.setattr(edge.identity, "install_identity", killed)
    with pytest.raises(KeyboardInterrupt):
        await enroll(config, token)
    monkeypatch.undo()
    spent = snapshot(city.running.app)
    # The same token, the same pending key: the same certificate, and nothing else changes.
    first = await enroll(config, token)
    again_answered = [r for r in audit_rows(city.running.app) if r["action"] == "gateway.enroll"]
    assert [r["result"] for r in again_answered] == ["ok", "ok"]
    assert "sent again" in again_answered[1]["detail"]
    assert snapshot(city.running.app, skip=("audit_log", "gateways")) == {
        k: v for k, v in spent.items() if k != "gateways"
    }
    serial = format(first.serial_number, "x")
    assert serial in again_answered[0]["detail"]
    async with gateway_channel(city, config) as chan, stream(chan) as s:
        assert (await s.hello()).gateway_id == "dj-001"
    # Once installed, the token is spent for good: another key gets nothing.
    with pytest.raises(EnrollmentError, match="token: already used"):
        await enroll(config, token)


async def test_a_retry_with_another_key_or_after_revocation_is_refused(city: City) -> None:
    token = await city.register("dj-001")
    async with channel(city.enroll_address, city.ca.root_pem) as chan:
        stub = enrollment_pb2_grpc.EnrollmentStub(chan)
        key = new_private_key()
        request = enrollment_pb2.EnrollRequest(
            gateway_id="dj-001", serial="SN-dj-001", token=token, csr_pem=make_csr(key, "dj-001")
        )
        answer = await stub.Enroll(request, timeout=10)
        assert (await stub.Enroll(request, timeout=10)).certificate_pem == answer.certificate_pem
        other = enrollment_pb2.EnrollRequest()
        other.CopyFrom(request)
        other.csr_pem = make_csr(new_private_key(), "dj-001")
        with pytest.raises(grpc.aio.AioRpcError, match="token: already used"):
            await stub.Enroll(other, timeout=10)
        await AdminClient(city.admin).revoke_gateway(
            control_pb2.RevokeGatewayRequest(gateway_id="dj-001")
        )
        with pytest.raises(grpc.aio.AioRpcError, match="token: already used"):
            await stub.Enroll(request, timeout=10)
