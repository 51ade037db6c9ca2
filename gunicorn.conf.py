"""gunicorn settings for the GPU monitoring API; every value can be overridden by env."""

import os
import sys

from app.telemetry import multiproc

# Before anything imports prometheus-client: it decides at import whether to count in
# files, which is how the workers' metrics add up at /metrics (its multiprocess mode).
try:
    _metrics_dir, _made_metrics_dir = multiproc.prepare(os.environ)
except multiproc.MultiprocDirError as _exc:
    sys.exit(str(_exc))

from app.config import load_config
from app.telemetry.logs import gunicorn_logconfig

# Validate the whole environment before forking: a bad value stops start-up, naming it.
_config = load_config(os.environ)

# Listen on every interface inside the container; PORT defaults to 8080.
bind = f"0.0.0.0:{_config.port}"

# Threaded workers: requests mostly wait on Prometheus, so threads overlap that waiting
# cheaply, and each worker process keeps one shared cache and thread pool.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))

# Above REQUEST_DEADLINE and HISTORY_DEADLINE, so a slow Prometheus produces a 504
# envelope, never a killed worker.
timeout = int(max(_config.request_deadline, _config.history_deadline) + 10)
# Let in-flight requests finish on SIGTERM (Kubernetes rolling updates).
graceful_timeout = 20
# Behind an ingress, reuse connections for a few seconds.
keepalive = 5

# Generous socket-level limits; the app rejects oversized queries itself, in the envelope.
limit_request_line = 16384
limit_request_field_size = 16384

# The app writes one access line per request; gunicorn's own errors go to stdout too.
accesslog = None
errorlog = "-"
loglevel = _config.log_level
# LOG_FORMAT=json: gunicorn's own lines are JSON objects too, one per line.
logconfig_dict = gunicorn_logconfig(loglevel) if _config.log_format == "json" else {}

# Trust X-Forwarded-* only from the ingress on loopback or as configured.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Load the app in each worker after fork: thread pools and sockets are never shared.
preload_app = False

# Heartbeat files in memory, so the container can run with a read-only root filesystem.
worker_tmp_dir = "/dev/shm"


def tune_gc() -> None:
    """Freeze what start-up built and collect less often (not a gunicorn setting).

    A cold request parses a few hundred thousand small JSON objects; with the default
    thresholds the collector runs hundreds of times per request and walks every live
    object. Freezing what start-up built and collecting less often cut the parse-join-dump
    path from ~335 ms to ~210 ms for 8,000 GPUs on a 2-core machine (bench/README.md).
    """
    import gc

    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def post_worker_init(worker) -> None:
    """Tune the garbage collector and start dialect detection once the app is loaded.

    Detection runs in a background thread of this worker (never the master: threads do
    not survive the fork), so it is done before the first request comes.
    """
    from app.state import start_worker

    tune_gc()
    if not start_worker(worker.wsgi):
        worker.log.warning("the loaded app is not create_app()'s: dialects are detected "
                           "on the first request instead")


def on_starting(server) -> None:
    """Start counting from zero: drop metric files a previous run left in the directory."""
    multiproc.clear(_metrics_dir)


def when_ready(server) -> None:
    """With METRICS_PORT, serve every worker's metrics from the master, on that port."""
    if _config.metrics_port:
        from prometheus_client import start_http_server

        from app.telemetry.metrics import aggregate_registry

        start_http_server(_config.metrics_port, registry=aggregate_registry())
        server.log.info("serving /metrics on port %d", _config.metrics_port)


def child_exit(server, worker) -> None:
    """Forget a finished worker's live gauges; its counts stay in the totals."""
    multiproc.mark_dead(worker.pid)


def on_exit(server) -> None:
    """Remove the metrics directory we made (one named by the environment is kept)."""
    if _made_metrics_dir:
        multiproc.remove(_metrics_dir)
