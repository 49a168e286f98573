"""Watching the orchestrator: its metrics and readiness over HTTP (see :mod:`.observer`)."""
