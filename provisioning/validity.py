"""A certificate's validity period, read from its DER encoding without ``cryptography``.

The cabinet agent reads the dates of its own certificate at every connection (when to
renew) and nothing else of it: TLS itself is the gRPC library's. Loading ``cryptography``
for that costs a Pi-class board ~9 MiB for the life of the process, so the agent walks the
few DER elements in front of the dates (RFC 5280, 4.1)::

    Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
                                  issuer, validity, ... }
    Validity     ::= SEQUENCE { notBefore Time, notAfter Time }
    Time         ::= UTCTime (YYMMDDHHMMSSZ) | GeneralizedTime (YYYYMMDDHHMMSSZ)

Anything else it meets raises :class:`ValueError`; a caller that wants the full parser's
verdict (and its words) then asks ``cryptography`` (:func:`provisioning.ca.load_certs`).
Trust is never decided here.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n(.+?)-----END CERTIFICATE-----", re.DOTALL)
_SEQUENCE, _INTEGER, _VERSION = 0x30, 0x02, 0xA0
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18


def validity(pem: bytes) -> tuple[datetime, datetime]:
    """``(not_before, not_after)`` of the first certificate of ``pem`` (a chain starts with
    its leaf), in UTC."""
    found = _PEM.search(pem)
    if found is None:
        raise ValueError("no PEM certificate")
    return _dates(_der(found.group(1)))


def every_validity(pem: bytes) -> list[tuple[datetime, datetime]]:
    """The dates of every certificate of ``pem``, in order (none: an empty list)."""
    return [_dates(_der(found.group(1))) for found in _PEM.finditer(pem)]


def _der(body: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"PEM body: {exc}") from None


def _dates(der: bytes) -> tuple[datetime, datetime]:
    _, cert_start, cert_end = _element(der, 0, len(der), _SEQUENCE)
    _, at, tbs_end = _element(der, cert_start, cert_end, _SEQUENCE)
    if der[at] == _VERSION:
        at = _element(der, at, tbs_end, _VERSION)[2]
    at = _element(der, at, tbs_end, _INTEGER)[2]  # serialNumber
    at = _element(der, at, tbs_end, _SEQUENCE)[2]  # signature algorithm
    at = _element(der, at, tbs_end, _SEQUENCE)[2]  # issuer
    _, at, validity_end = _element(der, at, tbs_end, _SEQUENCE)
    tag, start, at = _element(der, at, validity_end)
    not_before = _time(tag, der[start:at])
    tag, start, at = _element(der, at, validity_end)
    not_after = _time(tag, der[start:at])
    if at != validity_end:
        raise ValueError("validity: more than two times")
    return not_before, not_after


def _element(der: bytes, at: int, end: int, tag: int | None = None) -> tuple[int, int, int]:
    """The element at ``at``: its tag, where its content starts and where it ends."""
    if at + 2 > end:
        raise ValueError(f"DER: truncated at byte {at}")
    found, length = der[at], der[at + 1]
    if tag is not None and found != tag:
        raise ValueError(f"DER: tag {found:#04x} at byte {at}, expected {tag:#04x}")
    at += 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4 or at + size > end:
            raise ValueError(f"DER: bad length at byte {at - 1}")
        length = int.from_bytes(der[at : at + size], "big")
        at += size
    if at + length > end:
        raise ValueError(f"DER: element at byte {at} runs past its container")
    return found, at, at + length


def _time(tag: int, text: bytes) -> datetime:
    if tag == _UTC_TIME and len(text) == 13:
        # RFC 5280 4.1.2.5.1: YY >= 50 is 19YY, else 20YY.
        year = int(text[:2])
        text = (b"19" if year >= 50 else b"20") + text
    elif tag != _GENERALIZED_TIME or len(text) != 15:
        raise ValueError(f"validity: not a UTCTime or GeneralizedTime (tag {tag:#04x})")
    if not text.endswith(b"Z") or not text[:-1].isdigit():
        raise ValueError(f"validity: {text!r} is not YYYYMMDDHHMMSSZ")
    d = text[:-1].decode()
    year, month, day, hour, minute, second = (
        int(d[:4]),
        int(d[4:6]),
        int(d[6:8]),
        int(d[8:10]),
        int(d[10:12]),
        int(d[12:14]),
    )
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
