"""The field bus's errors: each names the offending field and the reason.

- :class:`FieldBusError` is the base of everything :mod:`edge.node` and
  :mod:`edge.fieldbus` raise (it lives here because the node, on MicroPython, needs it).
- :class:`InvalidMessage`: a message on the field bus breaks the contract (wrong topic,
  malformed payload, impossible value); it is refused whole and nothing changes.
- :class:`ConfigError`: the node's own configuration file is unusable.
"""


class FieldBusError(Exception):
    """Base error of the field bus.

    Attributes:
        field: the offending field, e.g. ``state.l`` or ``program.p[3]``.
        reason: why it is refused.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field + ": " + reason)
        self.field = field
        self.reason = reason


class InvalidMessage(FieldBusError):
    """A field-bus message breaks the contract."""


class ConfigError(FieldBusError):
    """The node's configuration is unusable."""
