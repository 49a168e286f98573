"""The public side: open data with no personal data, and citizens' reports (docs/opendata.md).

:mod:`~orchestrator.public.export` (read the store, build, publish atomically),
:mod:`~orchestrator.public.http` (the HTTPS endpoint, no login),
:mod:`~orchestrator.public.reports` (citizens' reports and their alarms),
:mod:`~orchestrator.public.daily` (the daily export).
"""
