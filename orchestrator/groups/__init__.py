"""Group documents and commands: one call for every gateway a target covers."""
