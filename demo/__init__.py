"""A simulated GPU cluster, its exporters in several real dialects, and a throwaway Prometheus.

cluster.py is the ground truth, dialects.py renders it as real exporters do, exporter.py
serves it over HTTP, and prometheus.py runs a real Prometheus that scrapes it.
"""
