"""What the gateway tells operators: Prometheus metrics and log lines."""
