"""The pure domain the agent and the orchestrator share, I/O-free.

The schedule engine and its model, signal timing plans and the crossing's safety card, access
lists, and release manifests and versions. The orchestrator refuses bad input early with the
same checks the agent applies before actuation.
"""
