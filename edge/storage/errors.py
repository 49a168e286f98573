"""Errors of the agent's local storage: each names the field or file and the reason."""

from __future__ import annotations

from foundation.errors import FieldError


class StorageError(FieldError):
    """Base of the storage errors.

    Attributes:
        field: what was refused: a path such as ``documents[schedule].version``, or a file.
        reason: why.
    """


class StorageWriteError(StorageError):
    """A file could not be written; the previous content is untouched."""


class StateError(StorageError):
    """A value given to (or found in) the agent state is refused."""


class DocumentRefusedError(StateError):
    """A desired-state document is stale, replayed, or does not match its digest."""


class OutboxError(StorageError):
    """An outbox operation is refused; the outbox is unchanged."""


class OutboxRecovered(OutboxError):
    """The outbox met a damaged database and recovered into a new one (see
    :mod:`edge.storage.outbox`): what was in flight is gone from it; start a new stream."""
