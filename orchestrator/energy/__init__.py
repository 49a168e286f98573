"""Energy and burning hours per lamp, cabinet, commune and day, against the baseline:
folded from metering at ingest (:mod:`domain.energy`), read by the admin API."""
