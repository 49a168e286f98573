"""The cabinet's side of the field bus: its broker, the node programs it computes, and
the host tools (simulated nodes, a gateway stand-in) that run node code on CPython.

The contract itself (topics, payloads, their checks) is :mod:`edge.node.bus`, shared with
the nodes; docs/fieldbus.md describes it.
"""
