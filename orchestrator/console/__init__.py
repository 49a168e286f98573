"""The web console: the control room's screens, served by the orchestrator over HTTPS.

Every operation it offers is an admin API operation, carried out by the same service
objects the gRPC API uses (roles, communes, validation and audit included): the console
only signs operators in (:mod:`orchestrator.console.signin`), renders pages
(:mod:`orchestrator.console.pages`) and hands each request to a service with a
:class:`orchestrator.access.peers.ConsoleCall` for context (:mod:`orchestrator.console.app`).
"""
