"""Traffic-signal controllers: the agent's side of a crossing, and bus priority."""
