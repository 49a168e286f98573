"""Lamps: the driver protocol, its backends, and the controller that follows the schedule."""
