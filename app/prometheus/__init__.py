"""Flask-free adapter to the Prometheus HTTP API."""
