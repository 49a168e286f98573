"""The city as the control room sees it: communes, cabinets, lamps, crossings, bollard sites.

Pure cores, no I/O: a seeded generator of a Dijon-sized city (:mod:`domain.city.generator`),
the asset register's records, parsing, validation and diff (:mod:`domain.city.inventory`),
and which group document a gateway gets (:mod:`domain.city.targets`, with
:mod:`domain.city.geometry` for areas).
"""
