"""`ondijon release` and `ondijon campaign` print outside text escaped (firmware_cli).

Campaign ids, versions, windows, reasons and history lines come from operators, outcome
details and running versions from gateways, paths from the command line: none may add a
line to the output nor reach the terminal as ESC, a C1 control or a bidi override. The
commands that talk to an orchestrator are run end to end in
``tests/firmware_e2e/test_firmware_cli_text.py``; here, the ones that run offline and the
rendering every campaign command prints through.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from ondijon.cli import main
from ondijon.firmware_cli import describe, summary
from protos.ondijon.v1 import firmware_pb2

# A newline to forge a line, an OSC title write ended by BEL, a clear screen, a C1 CSI and
# a right-to-left override that makes "exe.png" read "gnp.exe".
HOSTILE = "ok\nforged line\x1b]0;owned\x07\x1b[2J\x9b31m\u202egnp.exe"
SHOWN = ("\\n", "\\x1b]0;owned\\x07", "\\x1b[2J", "\\x9b31m", "\\u202egnp.exe")


def raw_controls(text: str) -> list[str]:
    """Characters a terminal would act on, other than the line ends the output meant."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}]


def hostile_campaign() -> firmware_pb2.Campaign:
    campaign = firmware_pb2.Campaign(
        campaign_id=f"c-{HOSTILE}",
        version=f"0.2.0{HOSTILE}",
        status=firmware_pb2.CAMPAIGN_STATUS_PAUSED,
        window=f"02:00-05:00{HOSTILE}",
        target_count=2,
        waves=[firmware_pb2.WaveProgress(percent=100, gateways=2)],
        reasons=[f"paused: {HOSTILE}"],
        history=[f"paused by op: {HOSTILE}", f"gateway said {HOSTILE}"],
    )
    campaign.gateways.add(
        gateway_id=f"dj-{HOSTILE}",
        wave=1,
        stage=firmware_pb2.FIRMWARE_STAGE_FAILED,
        detail=HOSTILE,
        hello_version=f"9.9{HOSTILE}",
    )
    campaign.gateways.add(
        gateway_id="dj-2", wave=1, stage=firmware_pb2.FIRMWARE_STAGE_DOWNLOADING, bytes_done=10
    )
    return campaign


def test_a_campaign_line_keeps_its_id_and_version_on_one_line() -> None:
    line = summary(hostile_campaign())
    assert "\n" not in line and raw_controls(line) == []
    assert line.startswith("c-ok\\nforged line\\x1b]0;owned")
    assert "0.2.0ok\\nforged" in line


def test_a_campaign_in_full_shows_every_outside_text_escaped() -> None:
    shown = describe(hostile_campaign())
    assert raw_controls(shown) == []
    # summary, window, one wave, two gateways, one reason, two history lines: nothing more
    assert len(shown.splitlines()) == 8
    for part in SHOWN:
        assert shown.count(part) >= 8, part  # id, version, window, gateway, runs, detail...
    assert "runs 9.9ok\\nforged line" in shown
    assert "  now: paused: ok\\nforged line" in shown


def test_release_keygen_prints_the_key_path_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "release\x1b[2J\u202eyek"
    assert main(["release", "keygen", str(key)]) == 0
    out = capsys.readouterr().out
    assert key.exists() and raw_controls(out) == [] and len(out.splitlines()) == 1
    assert "release\\x1b[2J\\u202eyek (0600)" in out


def test_release_build_and_sign_print_paths_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.firmware.simulator import make_wheel

    _, wheel = make_wheel("0.2.0", {"ondijon_probe.py": b'VERSION = "0.2.0"\n'})
    wheel_path = tmp_path / "ondijon-0.2.0-py3-none-any.whl"
    wheel_path.write_bytes(wheel)
    out_dir = tmp_path / "out\nforged line\x1b]0;owned\x07"
    key = tmp_path / "release.key"
    assert main(["release", "keygen", str(key)]) == 0
    capsys.readouterr()
    assert main(["release", "build", str(wheel_path), "--out", str(out_dir)]) == 0
    built = capsys.readouterr().out
    assert raw_controls(built) == [] and len(built.splitlines()) == 1
    assert "out\\nforged line\\x1b]0;owned\\x07" in built
    (release,) = out_dir.iterdir()
    assert main(["release", "sign", str(release), "--key", str(key)]) == 0
    signed = capsys.readouterr().out
    assert raw_controls(signed) == [] and len(signed.splitlines()) == 1
    assert "out\\nforged line\\x1b]0;owned\\x07" in signed


def test_a_release_error_quoting_a_file_name_is_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = tmp_path / "not-a-wheel\x1b]0;owned\x07\u202e.whl"
    wheel.write_bytes(b"")
    code = main(["release", "build", str(wheel), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert raw_controls(err) == [] and len(err.splitlines()) == 1
    assert "not-a-wheel\\x1b]0;owned\\x07\\u202e.whl" in err
