"""The agent's local storage: power can be cut at any byte and nothing is lost.

- :mod:`edge.storage.atomic` writes files atomically (temp file, fsync, ``os.replace``,
  fsync of the directory) and gives TinyDB a storage that keeps a last good copy.
- :mod:`edge.storage.state` is the agent's state file: desired documents, overrides,
  device counters and firmware bookkeeping, with stale versions refused.
- :mod:`edge.storage.outbox` is the durable store-and-forward queue of events (SQLite).
"""
