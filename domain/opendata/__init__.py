"""Open data of the street equipment, with no personal data: the pure core.

:mod:`domain.opendata.tables` (one dictionary per dataset, every format derived from it),
:mod:`domain.opendata.datasets` (the datasets and their row builders),
:mod:`domain.opendata.catalogue` (DCAT-AP catalogue, Data Package, the files of an export),
:mod:`domain.opendata.privacy` (the last gate: nothing personal leaves),
:mod:`domain.opendata.reports` (citizens' reports: parse, match, proof of work, retention).
"""
