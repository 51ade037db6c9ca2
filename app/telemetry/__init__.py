"""The service's own observability: request ids, structured logs, Prometheus metrics."""
