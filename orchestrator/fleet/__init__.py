"""The fleet and its desired state: gateways, documents and commands."""
