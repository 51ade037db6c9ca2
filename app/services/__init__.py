"""The domain: turn Prometheus series into GPU and process records."""
