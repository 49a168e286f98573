"""The audit log: every operator action, recorded once."""
