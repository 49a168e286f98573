"""OnDijon: agents for street-cabinet gateways and the central orchestrator."""
