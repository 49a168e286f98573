"""Release bytes from the orchestrator's ``Firmware.Download`` stream, on the agent's link.

The fetcher asks for a part from an offset and checks that every message continues exactly
where the previous one ended; any gap, overlap, stall or RPC error ends the fetch with an
exception, which :meth:`~edge.firmware.download.ChunkFetcher.fetch` turns into a
``DownloadError`` (the bytes already received are kept, the next attempt resumes after
them). The channel is asked for at each fetch, not held: after the link reconnects, a
retry runs on the new mutual-TLS connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from domain.firmware.manifest import Part
from edge.firmware.download import ChunkFetcher
from protos.ondijon.v1 import firmware_pb2, firmware_pb2_grpc

ChannelSource = Callable[[], "grpc.aio.Channel | None"]
"""Returns the link's current channel, or ``None`` while the link is down."""


class LinkDown(ConnectionError):
    """There is no connection to the orchestrator to download on."""


class GrpcChunkFetcher(ChunkFetcher):
    """Fetches the parts of release ``version`` over ``Firmware.Download``."""

    def __init__(self, channel: ChannelSource, version: str, *, stall_s: float = 60.0) -> None:
        """Args:
        channel: the link's current channel.
        version: the release whose parts are fetched.
        stall_s: a stream that sends nothing for this long is given up (and resumed).
        """
        self._channel = channel
        self.version = version
        self.stall_s = stall_s
        self.requests: list[tuple[str, int, int]] = []

    async def _fetch(self, part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
        channel = self._channel()
        if channel is None:
            raise LinkDown("the link to the orchestrator is down")
        self.requests.append((part.name, offset, length))
        stub = firmware_pb2_grpc.FirmwareStub(channel)
        call = stub.Download(
            firmware_pb2.DownloadRequest(
                version=self.version, part=part.name, offset=offset, length=length
            )
        )
        expected = offset
        try:
            responses = call.__aiter__()
            while True:
                try:
                    response = await asyncio.wait_for(responses.__anext__(), self.stall_s)
                except StopAsyncIteration:
                    return
                if response.offset != expected:
                    raise ConnectionError(
                        f"server sent offset {response.offset}, expected {expected}"
                    )
                expected += len(response.data)
                yield response.data
        finally:
            call.cancel()
