"""Alarms as states: raised from agents' events at ingest and by the orchestrator itself
(a silent gateway), acknowledged, shelved, assigned and closed by operators, reminded,
grouped under a root cause. The rules are :mod:`domain.alarms`; the SQL
:mod:`orchestrator.store.alarms`; the service :mod:`orchestrator.alarms.service`."""
