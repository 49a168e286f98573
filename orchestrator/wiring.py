"""The composition root: every service of an orchestrator process, built once, each given
exactly what it needs (by constructor; none of them sees this module).

Bottom-up: the store runner and the clock; the audit log and the certificate check on
them; the hub of open streams; delivery and cross-replica routing; the CRL, revocation and
its sweeper; readiness; firmware releases and campaigns; the gRPC services, the one gate
(authorization and audit) shared by every admin service, and admission in front of all;
the web console, on the very same admin services.
:mod:`orchestrator.server` starts what this builds and serves it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from domain.opendata.catalogue import Publisher
from foundation.clock import Clock
from orchestrator.access.admission import Admission
from orchestrator.access.certificates import Certificates
from orchestrator.access.gate import Gatekeeper
from orchestrator.access.limits import LiveRates, RateLimits
from orchestrator.alarms.metrics import AlarmGauge
from orchestrator.alarms.service import AlarmService
from orchestrator.api.campaigns import CampaignsService
from orchestrator.api.city import CityService
from orchestrator.api.commands import CommandsApi
from orchestrator.api.control import ControlCentreService
from orchestrator.api.documents import DocumentsApi
from orchestrator.api.feed import EventFeed
from orchestrator.api.fleet import FleetApi
from orchestrator.api.operations import OperationsService
from orchestrator.audit.log import Auditor
from orchestrator.config import OrchestratorConfig
from orchestrator.console.app import Console
from orchestrator.console.services import Services
from orchestrator.console.signin import SignIn
from orchestrator.console.states import LiveStates
from orchestrator.energy.service import EnergyService
from orchestrator.firmware.releases import FirmwareService
from orchestrator.firmware.runner import CampaignRunner, balena_from_environment
from orchestrator.groups.delivery import GroupDelivery
from orchestrator.identity.admin import IdentityAdmin
from orchestrator.identity.crl import CrlPublisher
from orchestrator.identity.enrollment import EnrollmentService
from orchestrator.identity.revocation import Revoker, Sweeper, close_streams
from orchestrator.ingest.delivery import Delivery
from orchestrator.ingest.devices import current_devices_of
from orchestrator.ingest.hub import Hub
from orchestrator.ingest.link import GatewayLinkService
from orchestrator.ingest.readiness import Readiness
from orchestrator.ingest.routing import Router
from orchestrator.metrics import Metrics
from orchestrator.playbooks.service import PlaybookService
from orchestrator.public.daily import DailyExport, parse_at
from orchestrator.public.http import Budgets, PublicSite
from orchestrator.public.reports import ReportService, report_key
from orchestrator.store.runner import StoreRunner
from provisioning.ca import CertificateAuthority


@dataclass
class Orchestrator:
    """What :func:`build` made: the shared parts and the services, for the server to start
    and stop (and for tests to look at). Services never receive this record."""

    config: OrchestratorConfig
    clock: Clock
    ca: CertificateAuthority
    runner: StoreRunner
    replica: str
    live_rates: LiveRates
    audit: Auditor
    certificates: Certificates
    hub: Hub
    router: Router
    crl: CrlPublisher
    revoker: Revoker
    sweeper: Sweeper
    readiness: Readiness
    campaigns: CampaignRunner
    gate: Gatekeeper
    admission: Admission
    link: GatewayLinkService
    control: ControlCentreService
    city: CityService
    campaigns_api: CampaignsService
    metrics: Metrics
    # Alarms (their sweep and their gauge's refresh are started by the server) and the
    # control room's operations.
    alarms: AlarmService
    alarm_gauge: AlarmGauge
    operations: OperationsService
    enroll: EnrollmentService = field(repr=False)
    renew: EnrollmentService = field(repr=False)
    # The public side (None when ``[public] listen`` is empty) and the daily export (None
    # without ``[public] export_dir``).
    public: PublicSite | None = None
    daily_export: DailyExport | None = None
    # The web console (None when ``[console] listen`` is empty): the same services.
    console: Console | None = None

    @property
    def rates(self) -> RateLimits:
        """The rate limits in force (admission and enrollment read them at each call)."""
        return self.live_rates.current


def build(
    *,
    config: OrchestratorConfig,
    clock: Clock,
    ca: CertificateAuthority,
    runner: StoreRunner,
    replica: str,
    health_servicer: Any,
    campaign_tick_s: float = 10.0,
    metrics: Metrics | None = None,
) -> Orchestrator:
    """Every service of one orchestrator process, wired; nothing started yet."""
    metrics = metrics or Metrics()
    live_rates = LiveRates()
    audit = Auditor(runner, clock)
    certificates = Certificates(runner, clock, audit)
    hub = Hub()
    delivery = Delivery(runner, clock)
    router = Router(
        runner=runner,
        hub=hub,
        delivery=delivery,
        replica=replica,
        catch_up_s=config.limits.catch_up_s,
        # A revocation announced by another replica closes this one's streams of it.
        on_revoked=lambda serials: close_streams(certificates, hub, serials),
    )
    crl = CrlPublisher(ca, runner, config.state_dir / "crl.pem")
    revoker = Revoker(
        runner=runner, clock=clock, certificates=certificates, hub=hub, router=router, crl=crl
    )
    releases = FirmwareService(runner, certificates)
    campaigns = CampaignRunner(
        runner=runner,
        clock=clock,
        hub=hub,
        releases=releases,
        tick_s=campaign_tick_s,
        balena=balena_from_environment(),
    )
    gate = Gatekeeper(runner, certificates, audit)
    # Alarms and energy fold events in as the link stores them (same transaction).
    alarms = AlarmService(runner, clock.now, live_since=router.live_since)
    alarm_gauge = AlarmGauge(runner, clock.now)
    metrics.add_collector(alarm_gauge.collect)
    energy = EnergyService(runner)

    def enrollment(*, allow_enroll: bool, allow_renew: bool) -> EnrollmentService:
        return EnrollmentService(
            runner=runner,
            clock=clock,
            ca=ca,
            certificates=certificates,
            audit=audit,
            crl=crl,
            hub=hub,
            revoker=revoker,
            rates=live_rates,
            certificate_days=config.gateway_certificate_days,
            allow_enroll=allow_enroll,
            allow_renew=allow_renew,
            metrics=metrics,
        )

    control = ControlCentreService(
        fleet=FleetApi(
            runner=runner,
            clock=clock,
            gate=gate,
            router=router,
            token_ttl_hours=config.token_ttl_hours,
        ),
        documents=DocumentsApi(runner=runner, clock=clock, gate=gate, router=router),
        commands=CommandsApi(runner=runner, clock=clock, gate=gate, router=router),
        feed=EventFeed(runner=runner, gate=gate, hub=hub),
        identities=IdentityAdmin(
            gate=gate,
            revoker=revoker,
            runner=runner,
            clock=clock,
            audit=audit,
            token_ttl_hours=config.token_ttl_hours,
        ),
    )
    campaigns_api = CampaignsService(runner=runner, clock=clock, gate=gate, campaigns=campaigns)
    city = CityService(
        runner=runner,
        clock=clock,
        gate=gate,
        router=router,
        deliver=GroupDelivery(hub=hub, router=router, delivery=delivery),
    )
    operations = OperationsService(
        clock=clock,
        gate=gate,
        alarms=alarms,
        energy=energy,
        playbooks=PlaybookService(runner=runner, clock=clock, router=router),
    )
    console = None
    if config.console.listen:
        # The devices' states open consoles follow: folded from the reports the link
        # stores, read from the store only for a cabinet first followed or streaming to
        # another replica.
        read_devices = functools.partial(current_devices_of, runner.store)
        states = LiveStates(read=functools.partial(runner.read, read_devices), local=hub.connected)
        console = Console(
            services=Services(
                control=control,
                campaigns=campaigns_api,
                operations=operations,
                city=city,
                gate=gate,
            ),
            sign_in=SignIn(
                runner=runner,
                clock=clock,
                audit=audit,
                session_minutes=config.console.session_minutes,
                attempts_per_minute=config.console.sign_in_per_minute,
            ),
            audit=audit,
            clock=clock,
            states=states,
            tiles_url=config.console.tiles_url,
        )

    return Orchestrator(
        config=config,
        clock=clock,
        ca=ca,
        runner=runner,
        replica=replica,
        live_rates=live_rates,
        audit=audit,
        certificates=certificates,
        hub=hub,
        router=router,
        crl=crl,
        revoker=revoker,
        sweeper=Sweeper(revoker),
        readiness=Readiness(runner, hub, health_servicer),
        campaigns=campaigns,
        gate=gate,
        admission=Admission(certificates, live_rates, hub.take_closing, metrics=metrics),
        link=GatewayLinkService(
            runner=runner,
            clock=clock,
            limits=config.limits,
            hub=hub,
            certificates=certificates,
            router=router,
            delivery=delivery,
            firmware=campaigns,
            metrics=metrics,
            event_hooks=(alarms.on_events, energy.on_events),
            state_hooks=(console.states.stored,) if console is not None else (),
        ),
        control=control,
        city=city,
        campaigns_api=campaigns_api,
        metrics=metrics,
        alarms=alarms,
        alarm_gauge=alarm_gauge,
        operations=operations,
        console=console,
        enroll=enrollment(allow_enroll=True, allow_renew=False),
        renew=enrollment(allow_enroll=False, allow_renew=True),
        public=_public_site(config, clock, runner),
        daily_export=_daily_export(config, clock, runner),
    )


def publisher_of(config: OrchestratorConfig) -> Publisher:
    """Who publishes the open data, from ``[public]`` (the export's catalogue says it)."""
    p = config.public
    return Publisher(
        name=p.publisher,
        contact_url=p.contact_url,
        contact_email=p.contact_email,
        licence=p.licence,
        base_url=p.base_url,
    )


def _public_site(
    config: OrchestratorConfig, clock: Clock, runner: StoreRunner
) -> PublicSite | None:
    p = config.public
    if not p.listen:
        return None
    key_file = (
        config.base_dir / p.report_key_file
        if p.report_key_file
        else (config.state_dir / "report.key")
    )
    reports = ReportService(
        runner=runner,
        now=clock.now,
        secret=report_key(key_file),
        difficulty=p.challenge_bits,
        retention=timedelta(days=p.retention_days),
    )
    return PublicSite(
        runner=runner,
        clock=clock,
        publisher=publisher_of(config),
        reports=reports,
        refresh_s=p.refresh_s,
        budgets=Budgets(p.requests_per_s, p.request_burst, p.reports_per_hour, p.report_burst),
    )


def _daily_export(
    config: OrchestratorConfig, clock: Clock, runner: StoreRunner
) -> DailyExport | None:
    p = config.public
    if not p.export_dir:
        return None
    return DailyExport(
        runner=runner,
        clock=clock,
        publisher=publisher_of(config),
        out=config.base_dir / p.export_dir,
        at=parse_at(p.export_at),
    )
