"""Release versions order as PEP 440 says (checked against packaging where importable)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.firmware.version import VersionError, is_version, parse_version


@pytest.mark.parametrize(
    "older, newer",
    [
        ("1.4.0", "1.5.0"),
        ("1.9.0", "1.10.0"),
        ("1.4.0rc1", "1.4.0"),
        ("1.4.0a2", "1.4.0b1"),
        ("1.4.0b1", "1.4.0rc1"),
        ("1.4.0.dev3", "1.4.0a1"),
        ("1.4.0", "1.4.0.post1"),
        ("1.4.0.post1.dev1", "1.4.0.post1"),
        ("2", "2.0.1"),
    ],
)
def test_newer_versions_compare_greater(older: str, newer: str) -> None:
    assert parse_version(older) < parse_version(newer)
    assert not parse_version(newer) < parse_version(older)


def test_trailing_zeros_do_not_make_a_different_version() -> None:
    assert parse_version("1.4") == parse_version("1.4.0")


@pytest.mark.parametrize(
    "text", ["", "v1.0", "1.0-rc1", "1.0+local", "1!1.0", "01.2", "1..2", "1.0alpha1"]
)
def test_spelling_variants_are_refused(text: str) -> None:
    assert not is_version(text)
    with pytest.raises(VersionError):
        parse_version(text)


_versions = st.builds(
    lambda release, pre, post, dev: (
        ".".join(map(str, release))
        + (f"{pre[0]}{pre[1]}" if pre else "")
        + (f".post{post}" if post is not None else "")
        + (f".dev{dev}" if dev is not None else "")
    ),
    st.lists(st.integers(0, 12), min_size=1, max_size=4),
    st.none() | st.tuples(st.sampled_from(["a", "b", "rc"]), st.integers(0, 3)),
    st.none() | st.integers(0, 3),
    st.none() | st.integers(0, 3),
)


@given(_versions, _versions)
def test_ordering_matches_packaging(left: str, right: str) -> None:
    packaging_version = pytest.importorskip("packaging.version")
    ours = (parse_version(left) < parse_version(right), parse_version(left) == parse_version(right))
    theirs = (
        packaging_version.Version(left) < packaging_version.Version(right),
        packaging_version.Version(left) == packaging_version.Version(right),
    )
    assert ours == theirs
