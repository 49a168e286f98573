"""Retractable bollards: the pure rules, the latches that survive restarts, the controller."""
