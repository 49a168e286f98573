"""The typed admin client: one method per admin RPC, one error type.

Every admin command of the CLI, the demo and the tests reach the orchestrator through
:class:`AdminClient`::

    async with AdminClient(profile) as admin:          # one channel for several calls
        gateways = (await admin.list_gateways()).gateways
    await AdminClient(profile).get_gateway(request)    # or a channel per call

Each method takes the request message of its RPC and returns its response message, so a
wrong request or a misspelt method is a type error, not a runtime ``getattr`` miss. Every
failure becomes :class:`AdminError`, which keeps the gRPC status (``error.code``) and the
orchestrator's detail (``error.details``), the ``field: reason`` of a refusal read into
``field`` and ``reason``. Callers compare codes, never parse messages.

A refused TLS handshake reaches gRPC clients as ``UNAVAILABLE`` with the transport's words
("Socket closed", OpenSSL's reason); :class:`AdminClient` checks the profile's certificate
itself first (expired, not yet valid, or not issued by the profile's CA) and turns a
handshake failure it could not foresee into one sentence that says what to do.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from foundation.errors import FieldError
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, firmware_pb2, firmware_pb2_grpc
from provisioning.profile import Profile

__all__ = ["AdminClient", "AdminError"]

Response = TypeVar("Response")

# What gRPC's transport says when the TLS handshake (not the orchestrator) refused a call.
_HANDSHAKE_WORDS = ("ssl", "handshake", "socket closed", "certificate", "tls")


class AdminError(FieldError):
    """The orchestrator refused a call, it could not be reached, or the input was refused
    before any call.

    Attributes:
        code: the call's gRPC status (``grpc.StatusCode.NOT_FOUND``); ``None`` for input
            refused before any call was made.
        details: the orchestrator's details as written (``"command_id: no such command"``).
    """

    code: grpc.StatusCode | None = None
    details: str = ""

    @classmethod
    def of_rpc(cls, code: grpc.StatusCode, details: str) -> AdminError:
        """The error of a call answered with ``code`` and ``details``."""
        error = cls.answered(code.name, details)
        error.code = code
        error.details = details
        return error

    @classmethod
    def of_handshake(cls, address: str) -> AdminError:
        """A TLS handshake refused (by either side), in words a person can act on."""
        error = cls(
            "profile",
            f"the TLS handshake with {address} failed: the orchestrator did not accept this "
            "profile's certificate (revoked, or issued by another CA) or its own certificate "
            "is not from this profile's CA; ask an admin for a new profile "
            "(ondijon operator add)",
        )
        error.code = grpc.StatusCode.UNAVAILABLE
        error.details = error.reason
        error.status = "UNAVAILABLE"
        return error


def _of_exception(exc: grpc.aio.AioRpcError, address: str) -> AdminError:
    details = exc.details() or ""
    if exc.code() is grpc.StatusCode.UNAVAILABLE and any(
        word in details.lower() for word in _HANDSHAKE_WORDS
    ):
        return AdminError.of_handshake(address)
    return AdminError.of_rpc(exc.code(), details)


def check_certificate(profile: Profile, now: datetime) -> None:
    """Refuse a profile whose certificate cannot be accepted, before any connection.

    Raises:
        AdminError: ``profile``: expired, not yet valid, or not issued by the profile's CA.
    """
    try:
        chain = x509.load_pem_x509_certificates((profile.directory / "operator.pem").read_bytes())
        roots = x509.load_pem_x509_certificates((profile.directory / "ca.pem").read_bytes())
    except ValueError as exc:
        raise AdminError(
            "profile", f"unreadable certificate in {profile.directory}: {exc}"
        ) from None
    leaf = chain[0]
    if now >= leaf.not_valid_after_utc:
        raise AdminError(
            "profile",
            f"the operator certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            "ask an admin for a new profile (ondijon operator add)",
        )
    if now < leaf.not_valid_before_utc:
        raise AdminError(
            "profile",
            "the operator certificate is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this machine's clock right?)",
        )
    if not _chains_to(chain, roots):
        raise AdminError(
            "profile",
            "the operator certificate was not issued by this profile's CA (ca.pem): it belongs "
            "to another OnDijon installation; ask an admin of this one for a profile",
        )


def _chains_to(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> bool:
    """True when each certificate of ``chain`` is signed by the next, and the last by (or
    is) one of ``roots``."""
    for cert, issuer in itertools.pairwise(chain):
        if not _signed_by(cert, issuer):
            return False
    top = chain[-1]
    return any(top == root or _signed_by(top, root) for root in roots)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            assert cert.signature_hash_algorithm is not None
            key.verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
        elif isinstance(key, rsa.RSAPublicKey):
            assert cert.signature_hash_algorithm is not None
            key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                padding.PKCS1v15(),
                cert.signature_hash_algorithm,
            )
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except InvalidSignature:
        return False
    return True


class AdminClient:
    """The admin API (ControlCentre, Operations, City and Campaigns services) for one
    operator profile.

    Used as ``async with AdminClient(profile) as admin``, every call shares one channel;
    otherwise each call opens and closes its own.

    Args:
        profile: the operator's profile (address, certificate, CA).
        timeout: seconds each unary call may take.
        now: the instant the profile's certificate is checked at (default: the clock's).
    """

    def __init__(
        self, profile: Profile, *, timeout: float = 30, now: datetime | None = None
    ) -> None:
        self.profile = profile
        self.timeout = timeout
        self._now = now
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> Self:
        self._channel = self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(None)

    def _open(self) -> grpc.aio.Channel:
        check_certificate(self.profile, self._now or datetime.now(UTC))
        return self.profile.channel()

    async def _call(self, send: Callable[[grpc.aio.Channel], Awaitable[Response]]) -> Response:
        channel = self._channel or self._open()
        try:
            return await send(channel)
        except grpc.aio.AioRpcError as exc:
            raise _of_exception(exc, self.profile.address) from None
        finally:
            if channel is not self._channel:
                await channel.close(None)

    def _control(self, channel: grpc.aio.Channel) -> control_pb2_grpc.ControlCentreAsyncStub:
        return control_pb2_grpc.ControlCentreStub(channel)

    def _operations(self, channel: grpc.aio.Channel) -> control_pb2_grpc.OperationsAsyncStub:
        return control_pb2_grpc.OperationsStub(channel)

    def _campaigns(self, channel: grpc.aio.Channel) -> firmware_pb2_grpc.CampaignsAsyncStub:
        return firmware_pb2_grpc.CampaignsStub(channel)

    def _city(self, channel: grpc.aio.Channel) -> control_pb2_grpc.CityAsyncStub:
        return control_pb2_grpc.CityStub(channel)

    # -- the fleet --------------------------------------------------------------------------

    async def add_gateway(
        self, request: control_pb2.AddGatewayRequest
    ) -> control_pb2.AddGatewayResponse:
        return await self._call(
            lambda ch: self._control(ch).AddGateway(request, timeout=self.timeout)
        )

    async def list_gateways(
        self, request: control_pb2.ListGatewaysRequest | None = None
    ) -> control_pb2.ListGatewaysResponse:
        request = request or control_pb2.ListGatewaysRequest()
        return await self._call(
            lambda ch: self._control(ch).ListGateways(request, timeout=self.timeout)
        )

    async def get_gateway(
        self, request: control_pb2.GetGatewayRequest
    ) -> control_pb2.GetGatewayResponse:
        return await self._call(
            lambda ch: self._control(ch).GetGateway(request, timeout=self.timeout)
        )

    async def list_devices(
        self, request: control_pb2.ListDevicesRequest
    ) -> control_pb2.ListDevicesResponse:
        return await self._call(
            lambda ch: self._control(ch).ListDevices(request, timeout=self.timeout)
        )

    async def revoke_gateway(
        self, request: control_pb2.RevokeGatewayRequest
    ) -> control_pb2.RevokeGatewayResponse:
        return await self._call(
            lambda ch: self._control(ch).RevokeGateway(request, timeout=self.timeout)
        )

    async def issue_enrollment_token(
        self, request: control_pb2.IssueEnrollmentTokenRequest
    ) -> control_pb2.IssueEnrollmentTokenResponse:
        return await self._call(
            lambda ch: self._control(ch).IssueEnrollmentToken(request, timeout=self.timeout)
        )

    # -- desired state and commands ------------------------------------------------------------

    async def put_desired_state(
        self, request: control_pb2.PutDesiredStateRequest
    ) -> control_pb2.PutDesiredStateResponse:
        return await self._call(
            lambda ch: self._control(ch).PutDesiredState(request, timeout=self.timeout)
        )

    async def get_desired_state(
        self, request: control_pb2.GetDesiredStateRequest
    ) -> control_pb2.GetDesiredStateResponse:
        return await self._call(
            lambda ch: self._control(ch).GetDesiredState(request, timeout=self.timeout)
        )

    async def send_command(
        self, request: control_pb2.SendCommandRequest
    ) -> control_pb2.SendCommandResponse:
        return await self._call(
            lambda ch: self._control(ch).SendCommand(request, timeout=self.timeout)
        )

    async def get_command(
        self, request: control_pb2.GetCommandRequest
    ) -> control_pb2.GetCommandResponse:
        return await self._call(
            lambda ch: self._control(ch).GetCommand(request, timeout=self.timeout)
        )

    # -- events and the audit log -------------------------------------------------------------

    async def list_events(
        self, request: control_pb2.ListEventsRequest | None = None
    ) -> control_pb2.ListEventsResponse:
        request = request or control_pb2.ListEventsRequest()
        return await self._call(
            lambda ch: self._control(ch).ListEvents(request, timeout=self.timeout)
        )

    async def watch_events(
        self, request: control_pb2.WatchEventsRequest | None = None
    ) -> AsyncIterator[control_pb2.StoredEvent]:
        """The live feed, for as long as the caller iterates (no deadline)."""
        request = request or control_pb2.WatchEventsRequest()
        channel = self._channel or self._open()
        try:
            async for item in self._control(channel).WatchEvents(request):
                yield item.event
        except grpc.aio.AioRpcError as exc:
            raise _of_exception(exc, self.profile.address) from None
        finally:
            if channel is not self._channel:
                await channel.close(None)

    async def list_audit(
        self, request: control_pb2.ListAuditRequest
    ) -> control_pb2.ListAuditResponse:
        return await self._call(
            lambda ch: self._control(ch).ListAudit(request, timeout=self.timeout)
        )

    async def list_overrides(
        self, request: control_pb2.ListOverridesRequest
    ) -> control_pb2.ListOverridesResponse:
        return await self._call(
            lambda ch: self._control(ch).ListOverrides(request, timeout=self.timeout)
        )

    # -- operations over the city: alarms, energy, crisis playbooks -------------------------

    async def list_alarms(
        self, request: control_pb2.ListAlarmsRequest
    ) -> control_pb2.ListAlarmsResponse:
        return await self._call(
            lambda ch: self._operations(ch).ListAlarms(request, timeout=self.timeout)
        )

    async def acknowledge_alarm(
        self, request: control_pb2.AcknowledgeAlarmRequest
    ) -> control_pb2.AcknowledgeAlarmResponse:
        return await self._call(
            lambda ch: self._operations(ch).AcknowledgeAlarm(request, timeout=self.timeout)
        )

    async def shelve_alarm(
        self, request: control_pb2.ShelveAlarmRequest
    ) -> control_pb2.ShelveAlarmResponse:
        return await self._call(
            lambda ch: self._operations(ch).ShelveAlarm(request, timeout=self.timeout)
        )

    async def assign_alarm(
        self, request: control_pb2.AssignAlarmRequest
    ) -> control_pb2.AssignAlarmResponse:
        return await self._call(
            lambda ch: self._operations(ch).AssignAlarm(request, timeout=self.timeout)
        )

    async def close_alarm(
        self, request: control_pb2.CloseAlarmRequest
    ) -> control_pb2.CloseAlarmResponse:
        return await self._call(
            lambda ch: self._operations(ch).CloseAlarm(request, timeout=self.timeout)
        )

    async def energy_report(
        self, request: control_pb2.EnergyReportRequest
    ) -> control_pb2.EnergyReportResponse:
        return await self._call(
            lambda ch: self._operations(ch).EnergyReport(request, timeout=self.timeout)
        )

    async def put_playbook(
        self, request: control_pb2.PutPlaybookRequest
    ) -> control_pb2.PutPlaybookResponse:
        return await self._call(
            lambda ch: self._operations(ch).PutPlaybook(request, timeout=self.timeout)
        )

    async def list_playbooks(
        self, request: control_pb2.ListPlaybooksRequest
    ) -> control_pb2.ListPlaybooksResponse:
        return await self._call(
            lambda ch: self._operations(ch).ListPlaybooks(request, timeout=self.timeout)
        )

    async def start_playbook(
        self, request: control_pb2.StartPlaybookRequest
    ) -> control_pb2.StartPlaybookResponse:
        return await self._call(
            lambda ch: self._operations(ch).StartPlaybook(request, timeout=self.timeout)
        )

    async def confirm_playbook(
        self, request: control_pb2.ConfirmPlaybookRequest
    ) -> control_pb2.ConfirmPlaybookResponse:
        return await self._call(
            lambda ch: self._operations(ch).ConfirmPlaybook(request, timeout=self.timeout)
        )

    async def end_playbook(
        self, request: control_pb2.EndPlaybookRequest
    ) -> control_pb2.EndPlaybookResponse:
        return await self._call(
            lambda ch: self._operations(ch).EndPlaybook(request, timeout=self.timeout)
        )

    async def get_playbook_run(
        self, request: control_pb2.GetPlaybookRunRequest
    ) -> control_pb2.GetPlaybookRunResponse:
        return await self._call(
            lambda ch: self._operations(ch).GetPlaybookRun(request, timeout=self.timeout)
        )

    async def list_playbook_runs(
        self, request: control_pb2.ListPlaybookRunsRequest
    ) -> control_pb2.ListPlaybookRunsResponse:
        return await self._call(
            lambda ch: self._operations(ch).ListPlaybookRuns(request, timeout=self.timeout)
        )

    async def watch_alarms(
        self, request: control_pb2.WatchAlarmsRequest
    ) -> AsyncIterator[control_pb2.AlarmRecord]:
        """Every change of an alarm the caller may see, for as long as the caller iterates."""
        channel = self._channel or self._open()
        try:
            async for item in self._operations(channel).WatchAlarms(request):
                yield item.alarm
        except grpc.aio.AioRpcError as exc:
            raise _of_exception(exc, self.profile.address) from None
        finally:
            if channel is not self._channel:
                await channel.close(None)

    # -- the city: asset register, group documents, group commands, the fleet ---------------

    async def import_assets(
        self, requests: AsyncIterator[control_pb2.ImportAssetsRequest], *, timeout: float = 600
    ) -> control_pb2.ImportAssetsResponse:
        """A header (dry_run, expected_digest), then the assets in chunks."""
        return await self._call(lambda ch: self._city(ch).ImportAssets(requests, timeout=timeout))

    async def list_assets(
        self, request: control_pb2.ListAssetsRequest
    ) -> control_pb2.ListAssetsResponse:
        return await self._call(lambda ch: self._city(ch).ListAssets(request, timeout=self.timeout))

    async def put_group_document(
        self, request: control_pb2.PutGroupDocumentRequest
    ) -> control_pb2.PutGroupDocumentResponse:
        return await self._call(
            lambda ch: self._city(ch).PutGroupDocument(request, timeout=self.timeout)
        )

    async def remove_group_document(
        self, request: control_pb2.RemoveGroupDocumentRequest
    ) -> control_pb2.RemoveGroupDocumentResponse:
        return await self._call(
            lambda ch: self._city(ch).RemoveGroupDocument(request, timeout=self.timeout)
        )

    async def list_group_documents(
        self, request: control_pb2.ListGroupDocumentsRequest | None = None
    ) -> control_pb2.ListGroupDocumentsResponse:
        request = request or control_pb2.ListGroupDocumentsRequest()
        return await self._call(
            lambda ch: self._city(ch).ListGroupDocuments(request, timeout=self.timeout)
        )

    async def get_effective_document(
        self, request: control_pb2.GetEffectiveDocumentRequest
    ) -> control_pb2.GetEffectiveDocumentResponse:
        return await self._call(
            lambda ch: self._city(ch).GetEffectiveDocument(request, timeout=self.timeout)
        )

    async def release_gateway_document(
        self, request: control_pb2.ReleaseGatewayDocumentRequest
    ) -> control_pb2.ReleaseGatewayDocumentResponse:
        return await self._call(
            lambda ch: self._city(ch).ReleaseGatewayDocument(request, timeout=self.timeout)
        )

    async def get_convergence(
        self, request: control_pb2.GetConvergenceRequest
    ) -> control_pb2.GetConvergenceResponse:
        return await self._call(
            lambda ch: self._city(ch).GetConvergence(request, timeout=self.timeout)
        )

    async def send_group_command(
        self, request: control_pb2.SendGroupCommandRequest
    ) -> control_pb2.SendGroupCommandResponse:
        return await self._call(
            lambda ch: self._city(ch).SendGroupCommand(request, timeout=self.timeout)
        )

    async def get_group_command(
        self, request: control_pb2.GetGroupCommandRequest
    ) -> control_pb2.GetGroupCommandResponse:
        return await self._call(
            lambda ch: self._city(ch).GetGroupCommand(request, timeout=self.timeout)
        )

    async def list_fleet(
        self, request: control_pb2.ListFleetRequest | None = None
    ) -> control_pb2.ListFleetResponse:
        request = request or control_pb2.ListFleetRequest()
        return await self._call(lambda ch: self._city(ch).ListFleet(request, timeout=self.timeout))

    # -- releases and campaigns --------------------------------------------------------------

    async def upload_release(
        self, requests: AsyncIterator[firmware_pb2.UploadReleaseRequest], *, timeout: float = 600
    ) -> firmware_pb2.UploadReleaseResponse:
        return await self._call(
            lambda ch: self._campaigns(ch).UploadRelease(requests, timeout=timeout)
        )

    async def list_releases(
        self, request: firmware_pb2.ListReleasesRequest | None = None
    ) -> firmware_pb2.ListReleasesResponse:
        request = request or firmware_pb2.ListReleasesRequest()
        return await self._call(
            lambda ch: self._campaigns(ch).ListReleases(request, timeout=self.timeout)
        )

    async def create_campaign(
        self, request: firmware_pb2.CreateCampaignRequest
    ) -> firmware_pb2.CreateCampaignResponse:
        return await self._call(
            lambda ch: self._campaigns(ch).CreateCampaign(request, timeout=self.timeout)
        )

    async def list_campaigns(
        self, request: firmware_pb2.ListCampaignsRequest | None = None
    ) -> firmware_pb2.ListCampaignsResponse:
        request = request or firmware_pb2.ListCampaignsRequest()
        return await self._call(
            lambda ch: self._campaigns(ch).ListCampaigns(request, timeout=self.timeout)
        )

    async def get_campaign(
        self, request: firmware_pb2.GetCampaignRequest
    ) -> firmware_pb2.GetCampaignResponse:
        return await self._call(
            lambda ch: self._campaigns(ch).GetCampaign(request, timeout=self.timeout)
        )

    async def pause_campaign(
        self, request: firmware_pb2.PauseCampaignRequest
    ) -> firmware_pb2.PauseCampaignResponse:
        return await self._call(
            lambda ch: self._campaigns(ch).PauseCampaign(request, timeout=self.timeout)
        )

    async def resume_campaign(
        self, request: firmware_pb2.ResumeCampaignRequest
    ) -> firmware_pb2.ResumeCampaignResponse:
        return await self._call(
            lambda ch: self._campaigns(ch).ResumeCampaign(request, timeout=self.timeout)
        )

    async def abort_campaign(
        self, request: firmware_pb2.AbortCampaignRequest
    ) -> firmware_pb2.AbortCampaignResponse:
        return await self._call(
            lambda ch: self._campaigns(ch).AbortCampaign(request, timeout=self.timeout)
        )
