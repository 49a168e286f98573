"""An operator's profile: where the orchestrator is and the operator's own credentials.

``ondijon operator add`` writes a profile directory (``profile.toml``, ``operator.key``
(0600), ``operator.pem``, ``ca.pem``); every admin command of the CLI reads it from
``--profile`` or ``$ONDIJON_PROFILE``.

A profile may name the street clock its commands are timed on (``[clock]``): the demo's
profile does, so that an override typed against the demo starts and ends on the demo's
fast simulated clock, the one its agents run on, instead of arriving already expired.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated

import grpc
import msgspec

from foundation.clock import Clock, SimulatedClock, SystemClock
from foundation.files import write_atomic
from foundation.settings import ConfigError, Settings, check_address, load
from provisioning.ca import KEY_MODE


class ProfileClock(Settings, frozen=True):
    """``[clock]`` of a profile: a simulated street clock shared with agents (the demo)."""

    start: datetime
    speed: Annotated[float, msgspec.Meta(ge=0.001)]
    origin: datetime  # the real instant at which the clock read ``start``

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("start", "origin"):
            if getattr(self, name).tzinfo is None:
                raise ConfigError(name, "must be a date-time with its UTC offset")

    def clock(self) -> Clock:
        return SimulatedClock(start=self.start, speed=self.speed, origin=self.origin)


class ProfileFile(Settings, frozen=True):
    """``profile.toml``."""

    address: str
    server_name: str = ""
    clock: ProfileClock | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_address("address", self.address)


@dataclass(frozen=True)
class Profile:
    directory: Path
    address: str
    server_name: str
    clock: Clock = field(default_factory=SystemClock)
    """The street clock commands are timed on (the system clock unless ``[clock]``)."""

    @classmethod
    def load(cls, directory: Path | None) -> Profile:
        if directory is None:
            env = os.environ.get("ONDIJON_PROFILE")
            if not env:
                raise ConfigError(
                    "--profile", "give an operator profile directory (or set ONDIJON_PROFILE)"
                )
            directory = Path(env)
        data = load(directory / "profile.toml", ProfileFile)
        clock = data.clock.clock() if data.clock is not None else SystemClock()
        return cls(directory, data.address, data.server_name, clock)

    @staticmethod
    def write(
        directory: Path, *, address: str, key_pem: bytes, chain_pem: bytes, root_pem: bytes
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        write_atomic(directory / "operator.key", key_pem, mode=KEY_MODE)
        write_atomic(directory / "operator.pem", chain_pem)
        write_atomic(directory / "ca.pem", root_pem)
        write_atomic(directory / "profile.toml", f'address = "{address}"\n'.encode())

    @staticmethod
    def set_clock(directory: Path, clock: ProfileClock) -> None:
        """Time this profile's commands on ``clock`` (a demo's simulated street clock)."""
        data = load(directory / "profile.toml", ProfileFile)
        text = f'address = "{data.address}"\n'
        if data.server_name:
            text += f'server_name = "{data.server_name}"\n'
        text += (
            f'[clock]\nstart = "{clock.start.isoformat()}"\nspeed = {clock.speed!r}\n'
            f'origin = "{clock.origin.isoformat()}"\n'
        )
        write_atomic(directory / "profile.toml", text.encode())

    def channel(self) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(self.directory / "ca.pem").read_bytes(),
            private_key=(self.directory / "operator.key").read_bytes(),
            certificate_chain=(self.directory / "operator.pem").read_bytes(),
        )
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(self.address, credentials, options=options)
