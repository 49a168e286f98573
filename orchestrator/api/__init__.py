"""The admin API for operators: the gRPC servicers over the subsystems' operations."""
