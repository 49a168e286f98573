"""A download cut at any byte resumes from the last durable offset and ends verified."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from domain.firmware.errors import DownloadError, FirmwareRefused
from domain.firmware.manifest import Manifest, Part
from edge.firmware.download import (
    ChunkFetcher,
    DownloadLimits,
    download_part,
    download_release,
    prune_downloads,
)
from edge.firmware.simulator import MemoryFetcher

DATA = os.urandom(20_000)
PART = Part("agent.whl", len(DATA), hashlib.sha256(DATA).hexdigest())
LIMITS = DownloadLimits(checkpoint_bytes=3000)


class PowerCut(BaseException):
    """Stops the program where it stands, as pulling the plug would."""


def _fetcher(**kwargs: int | None) -> MemoryFetcher:
    return MemoryFetcher({PART.name: DATA}, chunk_size=1000, **kwargs)


async def test_an_uninterrupted_download_yields_the_verified_part(tmp_path: Path) -> None:
    seen: list[int] = []
    path = await download_part(_fetcher(), PART, tmp_path, limits=LIMITS, on_progress=seen.append)
    assert path.read_bytes() == DATA
    assert seen[-1] == len(DATA) and seen == sorted(seen)
    assert sorted(os.listdir(tmp_path)) == [PART.name]


@pytest.mark.parametrize("cut", [0, 1, 999, 1000, 2999, 3000, 3001, 12_345, 19_999])
async def test_a_network_cut_resumes_exactly_where_it_stopped(tmp_path: Path, cut: int) -> None:
    with pytest.raises(DownloadError) as excinfo:
        await download_part(_fetcher(cut_after=cut), PART, tmp_path, limits=LIMITS)
    assert excinfo.value.field == f"parts.{PART.name}"
    assert "link cut" in excinfo.value.reason
    second = _fetcher()
    path = await download_part(second, PART, tmp_path, limits=LIMITS)
    assert path.read_bytes() == DATA
    assert second.requests == [(PART.name, cut, len(DATA) - cut)]


@pytest.mark.parametrize("cut_at_write", [1, 2, 3, 4, 7, 13, 20])
async def test_a_power_cut_resumes_from_the_last_checkpoint(
    tmp_path: Path, cut_at_write: int
) -> None:
    writes = 0

    def crash(point: str) -> None:
        nonlocal writes
        if point == "download:written":
            writes += 1
            if writes == cut_at_write:
                raise PowerCut

    with pytest.raises(PowerCut):
        await download_part(_fetcher(), PART, tmp_path, limits=LIMITS, crash=crash)
    # Whatever was not fsynced may be garbage after the cut.
    with (tmp_path / f"{PART.name}.partial").open("ab") as partial:
        partial.write(b"torn tail")
    second = _fetcher()
    path = await download_part(second, PART, tmp_path, limits=LIMITS)
    assert path.read_bytes() == DATA
    # Chunk k is written, then the checkpoint every 3000 bytes: the cut loses the rest.
    assert second.requests[0][1] == ((cut_at_write - 1) // 3) * 3000


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A raised PowerCut tests the order of the steps, not what fsync guarantees: these loops
    skip their hundreds of real fsyncs (seconds on a busy shared disk) and count them."""
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    return calls


async def test_every_crash_point_of_a_download_resumes_to_the_right_bytes(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    points: list[str] = []
    await download_part(_fetcher(), PART, tmp_path / "probe", limits=LIMITS, crash=points.append)
    assert fsyncs and len(points) > 30
    for index in range(len(points)):
        calls = 0

        def crash(point: str, stop: int = index) -> None:
            nonlocal calls
            calls += 1
            if calls == stop + 1:
                raise PowerCut

        directory = tmp_path / f"cut{index}"
        with pytest.raises(PowerCut):
            await download_part(_fetcher(), PART, directory, limits=LIMITS, crash=crash)
        path = await download_part(_fetcher(), PART, directory, limits=LIMITS)
        assert path.read_bytes() == DATA, points[index]


async def test_a_corrupt_stream_is_discarded_and_the_next_try_starts_over(tmp_path: Path) -> None:
    bad = MemoryFetcher({PART.name: DATA[:-1] + bytes([DATA[-1] ^ 1])}, chunk_size=1000)
    with pytest.raises(DownloadError, match="SHA-256 does not match"):
        await download_part(bad, PART, tmp_path, limits=LIMITS)
    assert os.listdir(tmp_path) == []
    again = _fetcher()
    await download_part(again, PART, tmp_path, limits=LIMITS)
    assert again.requests[0][1] == 0


async def test_progress_for_another_release_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / f"{PART.name}.partial").write_bytes(DATA[:5000])
    (tmp_path / f"{PART.name}.progress").write_text(
        json.dumps({"offset": 5000, "sha256": "0" * 64, "size": PART.size})
    )
    fetcher = _fetcher()
    await download_part(fetcher, PART, tmp_path, limits=LIMITS)
    assert fetcher.requests[0][1] == 0


async def test_progress_ahead_of_the_data_resumes_from_the_data(tmp_path: Path) -> None:
    (tmp_path / f"{PART.name}.partial").write_bytes(DATA[:4000])
    (tmp_path / f"{PART.name}.progress").write_text(
        json.dumps({"offset": 9000, "sha256": PART.sha256, "size": PART.size})
    )
    fetcher = _fetcher()
    assert (await download_part(fetcher, PART, tmp_path, limits=LIMITS)).read_bytes() == DATA
    assert fetcher.requests[0][1] == 4000


async def test_a_short_stream_keeps_its_bytes_for_the_next_try(tmp_path: Path) -> None:
    short = MemoryFetcher({PART.name: DATA[:7000]}, chunk_size=1000)
    with pytest.raises(DownloadError, match="stream ended at 7000"):
        await download_part(short, PART, tmp_path, limits=LIMITS)
    rest = _fetcher()
    await download_part(rest, PART, tmp_path, limits=LIMITS)
    assert rest.requests[0][1] == 7000


async def test_an_already_downloaded_part_is_not_fetched_again(tmp_path: Path) -> None:
    await download_part(_fetcher(), PART, tmp_path, limits=LIMITS)
    again = _fetcher()
    await download_part(again, PART, tmp_path, limits=LIMITS)
    assert again.requests == []


class _Overflowing(ChunkFetcher):
    async def _fetch(self, part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
        yield b"x" * (length + 1)


class _Broken(ChunkFetcher):
    async def _fetch(self, part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
        raise RuntimeError("stream reset by peer")
        yield b""


async def test_every_transport_failure_becomes_one_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="more than the 20000 bytes"):
        await download_part(_Overflowing(), PART, tmp_path, limits=LIMITS)
    with pytest.raises(DownloadError, match="stream reset by peer") as excinfo:
        await download_part(_Broken(), PART, tmp_path, limits=LIMITS)
    assert isinstance(excinfo.value.__cause__, RuntimeError)


async def test_a_release_downloads_every_part_with_overall_progress(tmp_path: Path) -> None:
    other = b"second part"
    manifest = Manifest(
        "1.5.0",
        created=None,  # type: ignore[arg-type]
        expires=None,  # type: ignore[arg-type]
        min_orchestrator_version="1.0.0",
        parts=(PART, Part("extra.bin", len(other), hashlib.sha256(other).hexdigest())),
        total_size=len(DATA) + len(other),
    )
    seen: list[int] = []
    fetcher = MemoryFetcher({PART.name: DATA, "extra.bin": other})
    files = await download_release(fetcher, manifest, tmp_path / "1.5.0", on_progress=seen.append)
    assert files["extra.bin"].read_bytes() == other
    assert seen[-1] == manifest.total_size
    with pytest.raises(FirmwareRefused, match="exceeds the limit"):
        await download_release(
            fetcher, manifest, tmp_path / "x", limits=DownloadLimits(max_part_size=100)
        )


def test_prune_keeps_only_the_named_download(tmp_path: Path) -> None:
    for name in ("1.4.0", "1.5.0"):
        (tmp_path / name).mkdir()
    prune_downloads(tmp_path, keep="1.5.0")
    assert [p.name for p in tmp_path.iterdir()] == ["1.5.0"]
