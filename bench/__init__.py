"""Cluster-scale benchmark of the GPU monitoring API against a real Prometheus.

`python -m bench` builds a simulated cluster per size, measures the floor (the service's
own PromQL issued straight to Prometheus), then the service under gunicorn as deployed:
cold and warm latency, concurrency with wrk, the load it puts on Prometheus and worker
memory. See bench/README.md for what every number means.
"""
