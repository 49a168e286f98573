"""An operator's profile: where the orchestrator is and the operator's own credentials.

``ondijon operator add`` writes a profile directory (``profile.toml``, ``operator.key``
(0600), ``operator.pem``, ``ca.pem``); every admin command of the CLI reads it from
``--profile`` or ``$ONDIJON_PROFILE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from foundation.files import write_atomic
from foundation.settings import ConfigError, Settings, check_address, load
from provisioning.ca import KEY_MODE


class ProfileFile(Settings, frozen=True):
    """``profile.toml``."""

    address: str
    server_name: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_address("address", self.address)


@dataclass(frozen=True)
class Profile:
    directory: Path
    address: str
    server_name: str

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
        return cls(directory, data.address, data.server_name)

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
