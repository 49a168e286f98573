"""Agent firmware updates: signed releases, resumable download, A/B slots, commit or rollback.

How an update goes (after Mender, RAUC and TUF):

1. **Offer** — the orchestrator sends a ``FirmwareOffer`` with a ``ReleaseManifest``
   (canonical JSON + Ed25519 signatures). :mod:`domain.firmware.manifest` refuses it unless it is
   signed by a pinned key, unexpired, well formed and newer than the running version.
2. **Download** — :mod:`edge.firmware.download` refuses a release over its size limits or
   the disk's free space, then fetches each part in chunks through a
   :class:`~edge.firmware.download.ChunkFetcher`, checkpointing durable offsets so a cut at
   any byte resumes, and checks size and SHA-256 at the end. Until the switch (step 3, the
   point of no return) the orchestrator may cancel the update.
3. **Install** — :mod:`edge.firmware.slots` unpacks the release wheel into the inactive
   slot (``slots/a`` or ``slots/b`` under ``/var/lib/ondijon/firmware``) and only then
   switches the pointer (``state.json``, replaced atomically) to that slot as a *trial*.
4. **Restart** — the agent asks systemd for a restart. systemd's ``ExecStart`` is
   ``python -m edge.firmware.launch`` from the base install, which calls
   :func:`~edge.firmware.boot.resolve_boot_slot`: a trial's boots are counted and a trial
   that never commits (crash loop, watchdog-killed hang) is rolled back before the agent
   is even imported; then it execs the agent with the active slot first on ``PYTHONPATH``
   and the version it booted in ``ONDIJON_RELEASE`` (the version the agent reports).
5. **Commit** — the new agent runs :func:`~edge.firmware.boot.confirm_trial`: it commits
   once it has run the stability period with its health checks passing, and rolls back
   and restarts when they fail for the deadline. The outcome is kept in the state until
   reported (``update.pending_report``); a rollback is reported by the next start, which
   runs the version rolled back to.
6. **Watch** — a committed release whose starts keep ending before the stability period
   (a crash loop after the commit) is left by the launcher for the previous one.

The base install (what the gateway was provisioned with) is the version of last resort:
it is what boots when no slot is committed or a slot is found damaged. Power can be cut
at any step: until the pointer names a complete slot, the committed version boots; every
step has a named crash point (:mod:`edge.firmware.durable`) that the tests cut at.
:mod:`edge.firmware.update` chains the steps for the link layer,
:mod:`edge.firmware.notify` talks to systemd, :mod:`edge.firmware.simulator` is an
in-memory release server for tests, and :mod:`edge.firmware.systemd_standin` plays systemd's
part where there is none (tests, the bench).
"""
