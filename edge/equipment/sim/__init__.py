"""Simulated equipment behind the pins: backends for the bench, the demo and integrators."""
