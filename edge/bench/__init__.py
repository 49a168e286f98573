"""The integrators' bench: a declared inventory of what is wired to which pin, the street
simulated behind those pins (or real equipment on a Raspberry Pi), fault injection and a
report per run. ``hil_tests/`` runs its scenarios on it; docs/integrators.md says how.
"""
