"""Exporter dialects: how each GPU exporter names and measures what the API serves."""
