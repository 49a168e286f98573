"""What every process needs from its host, knowing nothing of the street.

The clock (system, simulated and manual), atomic files with their crash points, the escape
of outside text for logs and terminals, and the loading of TOML settings. Every other package
builds on these; this one imports none of them.
"""
