"""Firmware campaigns for fleets on balenaOS: pin devices to a release through balena-sdk.

On balenaOS the agent is a container release and balena's supervisor does the download,
the switch and (for host OS updates) the rollback-health; the campaign core
(:mod:`orchestrator.firmware.rollout`) still decides who is offered what and when. Offering a wave
means pinning its devices to the release (``models.device.pin_to_release``); a device's
outcome is judged from ``models.device.get``: COMMITTED once it is online and running the
release with a settled status, DOWNLOADING while balena says ``updating``, FAILED when it
was pinned to another release by someone else or is not running the release by the
deadline.

The SDK is blocking: every call runs in a worker thread (:func:`asyncio.to_thread`), one
at a time (the SDK is not documented thread-safe), under ``call_timeout`` (the SDK sets no
HTTP timeout; a call that times out is abandoned in its thread). ``balena_host`` selects
balenaCloud (``balena-cloud.com``) or a self-hosted openBalena (its domain: the API is
``https://api.<domain>/``); ``api_url`` overrides the API address outright, e.g. for a
local test server. All SDK failures surface as :class:`BalenaError`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from foundation.errors import FieldError
from orchestrator.firmware.rollout import GatewayReport, Outcome

T = TypeVar("T")
SETTLED = ("operational", "idle")
_DEVICE_FIELDS = [
    "id",
    "uuid",
    "is_online",
    "overall_status",
    "is_running__release",
    "is_pinned_on__release",
]


class BalenaError(FieldError):
    """A balena API call failed or returned something unusable.

    Attributes:
        field: what it was about, e.g. ``devices.<uuid>``, ``release``, ``api``.
        reason: why.
    """


@dataclass(frozen=True)
class BalenaSettings:
    """How to reach balena.

    Attributes:
        api_key: a balena API key (or session token) allowed to pin the fleet's devices.
        balena_host: ``balena-cloud.com`` or the domain of a self-hosted openBalena.
        api_url: full API address overriding the one derived from ``balena_host``.
        update_deadline: a device not running the release this long after it was offered
            counts as FAILED.
        call_timeout: seconds one SDK call may take.
    """

    api_key: str
    balena_host: str = "balena-cloud.com"
    api_url: str | None = None
    update_deadline: timedelta = timedelta(hours=2)
    call_timeout: float = 60.0


@dataclass(frozen=True)
class DeviceStatus:
    """What balena says about one device."""

    uuid: str
    is_online: bool
    overall_status: str
    running_release: int | None
    pinned_release: int | None


def judge_device(
    status: DeviceStatus, release_id: int, offered_at: datetime, now: datetime, deadline: timedelta
) -> GatewayReport | None:
    """The campaign outcome of a device pinned to ``release_id`` at ``offered_at`` (pure).

    Returns:
        A report, or ``None`` while there is nothing to say yet.
    """
    if status.pinned_release is not None and status.pinned_release != release_id:
        return GatewayReport(
            Outcome.FAILED, now, f"pinned to release {status.pinned_release} by someone else"
        )
    running = status.running_release == release_id
    if running and status.is_online and status.overall_status in SETTLED:
        return GatewayReport(Outcome.COMMITTED, now, f"running release {release_id}")
    if now - offered_at >= deadline:
        return GatewayReport(
            Outcome.FAILED,
            now,
            f"not running release {release_id} {deadline} after the offer"
            f" (status {status.overall_status or 'unknown'},"
            f" {'online' if status.is_online else 'offline'},"
            f" running {status.running_release})",
        )
    if status.overall_status == "updating":
        return GatewayReport(Outcome.DOWNLOADING, now, "balena is updating the device")
    return None


class BalenaBackend:
    """Pins devices to releases and reads their status, asynchronously."""

    def __init__(self, settings: BalenaSettings, *, sdk: Any = None) -> None:
        """Connect with ``settings`` (``sdk``: an already built ``balena.Balena``)."""
        self.settings = settings
        self._sdk = sdk if sdk is not None else make_sdk(settings)
        self._lock = threading.Lock()

    async def resolve_release(self, commit_or_id: str | int) -> int:
        """The id of a successful release, from its full commit hash or id.

        Raises:
            BalenaError: unknown, ambiguous or unsuccessful release (field ``release``).
        """
        release = await self._call(
            "release",
            lambda: self._sdk.models.release.get(
                commit_or_id, {"$select": ["id", "commit", "status"]}
            ),
        )
        if release.get("status") not in (None, "success"):
            raise BalenaError("release", f"{commit_or_id} is {release.get('status')}, not success")
        return int(release["id"])

    async def pin(self, uuids: Sequence[str], release: str | int) -> None:
        """Pin every device of ``uuids`` to ``release`` (commit hash or id), in one batch.

        Raises:
            BalenaError: a device or the release is unknown, or the API refused.
        """
        if not uuids:
            return
        await self._call(
            "devices", lambda: self._sdk.models.device.pin_to_release(list(uuids), release)
        )

    async def device_status(self, uuid: str) -> DeviceStatus:
        """What balena says about the device ``uuid``.

        Raises:
            BalenaError: unknown device or API failure (field ``devices.<uuid>``).
        """
        raw = await self._call(
            f"devices.{uuid}",
            lambda: self._sdk.models.device.get(uuid, {"$select": _DEVICE_FIELDS}),
        )
        return DeviceStatus(
            uuid=str(raw.get("uuid", uuid)),
            is_online=bool(raw.get("is_online")),
            overall_status=str(raw.get("overall_status") or ""),
            running_release=_ref(raw.get("is_running__release")),
            pinned_release=_ref(raw.get("is_pinned_on__release")),
        )

    async def offer(
        self, gateway_ids: Sequence[str], device_of: Mapping[str, str], release: str | int
    ) -> None:
        """Offer a wave: pin the balena devices of ``gateway_ids`` to ``release``.

        Raises:
            BalenaError: a gateway has no balena device (field ``device_of.<id>``), or the
                pinning failed.
        """
        missing = [g for g in gateway_ids if g not in device_of]
        if missing:
            raise BalenaError(f"device_of.{missing[0]}", "no balena device for this gateway")
        await self.pin([device_of[g] for g in gateway_ids], release)

    async def outcomes(
        self,
        device_of: Mapping[str, str],
        release_id: int,
        offered: Mapping[str, datetime],
        now: datetime,
    ) -> dict[str, GatewayReport]:
        """Reports for the offered gateways, ready for :func:`orchestrator.firmware.rollout.decide`.

        A device balena cannot tell about right now is left out (no news), not failed.
        """
        reports: dict[str, GatewayReport] = {}
        for gateway_id, offered_at in offered.items():
            uuid = device_of.get(gateway_id)
            if uuid is None:
                continue
            try:
                status = await self.device_status(uuid)
            except BalenaError:
                continue
            report = judge_device(
                status, release_id, offered_at, now, self.settings.update_deadline
            )
            if report is not None:
                reports[gateway_id] = report
        return reports

    async def _call(self, field: str, call: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return call()

        try:
            return await asyncio.wait_for(asyncio.to_thread(locked), self.settings.call_timeout)
        except TimeoutError as exc:
            raise BalenaError(field, f"no answer within {self.settings.call_timeout:g} s") from exc
        except BalenaError:
            raise
        except Exception as exc:
            raise BalenaError(field, _describe(exc)) from exc


def make_sdk(settings: BalenaSettings) -> Any:
    """A ``balena.Balena`` client for ``settings``, kept in memory, logged in with the key."""
    import balena
    from balena.models import Models
    from balena.pine import PineClient

    # data_directory=False keeps the SDK in memory: no ~/.balena written by the orchestrator.
    sdk = balena.Balena({"balena_host": settings.balena_host, "data_directory": False})
    if settings.api_url:
        url = settings.api_url if settings.api_url.endswith("/") else settings.api_url + "/"
        sdk.settings.set("api_endpoint", url)
        # The pine client fixes its URL prefix when built: rebuild it (SDK 15-17).
        sdk.pine = PineClient(sdk.settings, balena.__version__)
        sdk.models = Models(sdk.pine, sdk.settings)
    sdk.auth.login_with_token(settings.api_key)
    return sdk


def _ref(value: object) -> int | None:
    # A navigation property is {"__id": n} when selected, [{"id": n, ...}] when expanded.
    if isinstance(value, dict) and "__id" in value:
        return int(value["__id"])
    if isinstance(value, list) and value and isinstance(value[0], dict) and "id" in value[0]:
        return int(value[0]["id"])
    return None


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {message}" + (f" (HTTP {status})" if status else "")
