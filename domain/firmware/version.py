"""Release versions: a strict subset of PEP 440, compared as PEP 440 compares them.

The agent must order versions to refuse rollbacks, and ``packaging`` is not one of the
agent's runtime dependencies (it only arrives with pytest), so this module carries the few
lines needed. Accepted: ``N(.N)*`` then optionally ``aN``/``bN``/``rcN``, ``.postN``,
``.devN`` (e.g. ``1.4.0``, ``1.4.0rc2``, ``1.4.0.post1``, ``2.0.0.dev3``). Refused, on
purpose: epochs, local versions (``+abc``), leading ``v``, spelling variants (``-rc``,
``alpha``) and leading zeros, so that one version has one spelling in manifests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

_PATTERN = re.compile(
    r"(?P<release>(?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*))*)"
    r"(?:(?P<pre_l>a|b|rc)(?P<pre_n>0|[1-9]\d*))?"
    r"(?:\.post(?P<post>0|[1-9]\d*))?"
    r"(?:\.dev(?P<dev>0|[1-9]\d*))?"
)
_PRE_RANK = {"a": 0, "b": 1, "rc": 2}


class VersionError(ValueError):
    """A version string is not in the accepted form."""


@total_ordering
@dataclass(frozen=True)
class Version:
    """A parsed release version; compare with ``<``, ``==`` as PEP 440 does."""

    text: str = field(compare=False)
    _key: tuple[object, ...] = field(repr=False)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key < other._key

    def __str__(self) -> str:
        return self.text


def parse_version(text: str) -> Version:
    """Parse ``text`` into a comparable :class:`Version`.

    Args:
        text: a version such as ``1.4.0`` or ``1.5.0rc1``.

    Raises:
        VersionError: ``text`` is not in the accepted PEP 440 subset.
    """
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise VersionError(f"{text!r} is not a version like 1.4.0, 1.4.0rc1 or 1.4.0.post1")
    release = [int(n) for n in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre_l, post, dev = match["pre_l"], match["post"], match["dev"]
    # Same ordering as packaging.version: 1.0.dev0 < 1.0a1 < 1.0 < 1.0.post1.
    if pre_l is None and post is None and dev is not None:
        pre: tuple[int, ...] = (0,)
    elif pre_l is None:
        pre = (2,)
    else:
        pre = (1, _PRE_RANK[pre_l], int(match["pre_n"]))
    post_key = -1 if post is None else int(post)
    dev_key: tuple[int, ...] = (1,) if dev is None else (0, int(dev))
    return Version(text, (tuple(release), pre, post_key, dev_key))


def is_version(text: str) -> bool:
    """Whether ``text`` is a version :func:`parse_version` accepts."""
    return _PATTERN.fullmatch(text) is not None
