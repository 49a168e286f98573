"""The node's errors: each names the offending field and the reason.

- :class:`NodeError` is the base of everything :mod:`edge.node` raises.
- :class:`InvalidMessage`: a message on the field bus breaks the contract (wrong topic,
  malformed payload, impossible value); it is refused whole and nothing changes.
- :class:`ConfigError`: the node's own configuration file is unusable.
"""


class NodeError(Exception):
    """Base error of the node firmware.

    Attributes:
        field: the offending field, e.g. ``state.l`` or ``program.p[3]``.
        reason: why it is refused.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field + ": " + reason)
        self.field = field
        self.reason = reason


class InvalidMessage(NodeError):
    """A field-bus message breaks the contract."""


class ConfigError(NodeError):
    """The node's configuration is unusable."""
