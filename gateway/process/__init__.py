"""The process model: a supervisor, workers sharing one port, reload in two phases, draining."""
