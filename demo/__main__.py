"""Run the API on a built-in demo: a simulated GPU cluster scraped by a real Prometheus.

    python -m demo [--dialect dcgm --dialect nvitop] [--nodes 4] [--port 8080]

Starts simulated exporters (by default dcgm-exporter, for utilization, memory, pods and
MIG, beside nvitop-exporter, for the process table, as many clusters run them), a real
Prometheus scraping them every few seconds, and the API under gunicorn as deployed, then
waits for Ctrl-C and stops everything.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from app.config import Config, ConfigError, load_config
from app.prometheus.errors import PrometheusError as PrometheusAppError
from app.state import build_state
from demo.cluster import ClusterSpec, Fault, current_step, node_names, parse_fault
from demo.dialects import DIALECTS, NODELESS_DIALECTS
from demo.exporter import ExporterServer
from demo.prometheus import PrometheusError, PrometheusServer, ScrapeTarget

logger = logging.getLogger("demo")
ROOT = Path(__file__).resolve().parent.parent


KSM = "kube-state-metrics"


def _targets(exporter: ExporterServer, spec: ClusterSpec, dialect: str) -> list[ScrapeTarget]:
    if dialect == KSM:  # as kube-prometheus-stack scrapes it: its own labels win
        return [ScrapeTarget(exporter.address, labels={"job": KSM}, honor_labels=True)]
    if dialect not in NODELESS_DIALECTS:
        # Scraped like a DaemonSet behind the GPU Operator's ServiceMonitor.
        return [ScrapeTarget(exporter.address, labels={"namespace": "gpu-operator"})]
    return [
        ScrapeTarget(exporter.address, metrics_path=f"/metrics/{node}",
                     labels={"instance": f"{node}:9835", "kubernetes_node": node})
        for node in node_names(spec)
    ]


def main(argv: list[str] | None = None) -> int:
    """Start the demo and block until interrupted; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialect", choices=DIALECTS, action="append",
                        help="an exporter to simulate; repeat for several "
                             "(default: dcgm and nvitop)")
    parser.add_argument("--nodes", type=int, default=4, help="GPU nodes (default 4)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    parser.add_argument("--mig-nodes", type=int, default=1, help="nodes in MIG mode")
    parser.add_argument("--shared-gpus", type=int, default=2, help="time-sliced GPUs")
    parser.add_argument("--period", type=float, default=15.0,
                        help="seconds between changes of the simulated values")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")),
                        help="API port (default 8080 or $PORT)")
    parser.add_argument("--prometheus-port", type=int, default=None,
                        help="Prometheus port (default: a free one)")
    parser.add_argument("--fault", action="append", default=None, metavar="NODE:GPU:KIND",
                        help="inject a fault a minute after start, e.g. gpu-node-001:1:xid:79, "
                             "gpu-node-002:3:ecc_dbe, gpu-node-001:2:throttle:0x40; repeat "
                             "for several (default: a few on chosen GPUs; 'none' for none)")
    parser.add_argument("--no-kube-state-metrics", action="store_true",
                        help="run without kube-state-metrics (allocation figures are null)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s")

    # Keep at least one node out of MIG mode, so time-sliced GPUs have somewhere to be.
    try:
        spec = ClusterSpec(nodes=args.nodes, gpus_per_node=args.gpus, seed=7,
                           mig_nodes=min(args.mig_nodes, args.nodes - 1),
                           shared_gpus=args.shared_gpus,
                           faults=_faults(args.fault, args.period), fleet=True)
    except ValueError as exc:
        parser.error(str(exc))
    signal.signal(signal.SIGTERM, _interrupt)
    dialects = args.dialect or ["dcgm-health-all", "nvitop"]
    if not args.no_kube_state_metrics:
        dialects.append(KSM)
    with ExitStack() as stack:
        targets: list[ScrapeTarget] = []
        for dialect in dialects:
            exporter = stack.enter_context(ExporterServer(spec, dialect, period_s=args.period))
            targets.extend(_targets(exporter, spec, dialect))
            logger.info("simulated %s exporter: %d nodes x %d GPUs at %s/metrics",
                        dialect, spec.nodes, spec.gpus_per_node, exporter.url)
        try:
            prometheus = PrometheusServer(targets, scrape_interval="5s",
                                          port=args.prometheus_port)
            prometheus.start()
        except PrometheusError as exc:
            logger.error("%s", exc)
            return 1
        try:
            return _serve_api(prometheus, len(targets), args.port)
        finally:
            prometheus.stop()


# What the demo breaks unless told otherwise: an XID 79, an application XID, double-bit
# ECC errors and thermal throttling, on GPUs of the first two (non-MIG) nodes.
DEFAULT_FAULTS = ("gpu-node-001:1:xid:79", "gpu-node-001:2:throttle:0x40",
                  "gpu-node-002:0:xid:13", "gpu-node-002:3:ecc_dbe")


def _faults(given: list[str] | None, period_s: float) -> tuple[Fault, ...]:
    """The faults to inject, starting a minute (at least one step) from now."""
    texts = DEFAULT_FAULTS if given is None else tuple(t for t in given if t != "none")
    start = current_step(period_s) + max(1, round(60 / period_s)) if period_s > 0 else 0
    faults = tuple(parse_fault(text, start) for text in texts)
    for fault in faults:
        logger.info("fault from step %d: %s GPU %d %s %s", fault.start_step, fault.node,
                    fault.gpu, fault.kind, fault.value)
    return faults


def _serve_api(prometheus: PrometheusServer, targets: int, port: int) -> int:
    """Run the API under gunicorn, as deployed, on `prometheus` until interrupted."""
    logger.info("Prometheus at %s", prometheus.url)
    env = {**os.environ, "PROMETHEUS_URL": prometheus.url, "PORT": str(port)}
    try:
        config = load_config(env)  # what each worker will load; a bad variable stops here
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    _report_detection(prometheus, targets, config)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    api = subprocess.Popen([str(gunicorn), "--config", "gunicorn.conf.py", "wsgi:app"],
                           cwd=ROOT, env=env)
    logger.info("API on http://127.0.0.1:%d — try /api/v1/gpu/metrics, /api/v1/cluster, "
                "/api/v1/namespaces, /api/v1/gpu/health, /api/v1/gpu/processes, "
                "/api/v1/capabilities, /api/healthz; "
                "Ctrl-C stops everything", port)
    try:
        return api.wait()
    except KeyboardInterrupt:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)
        return 0


def _report_detection(prometheus: PrometheusServer, targets: int, config: Config) -> None:
    """Wait for the first scrape of every exporter; log what the API will read there.

    The API's workers detect the exporters when they start: started after the first
    scrape, they find them at once instead of retrying a few seconds later.
    """
    try:
        prometheus.wait_for("up == 1", min_count=targets, timeout=30.0)
    except PrometheusError as exc:
        logger.warning("not every exporter was scraped yet; the API retries: %s", exc)
        return
    state = build_state(config)  # wired as every gunicorn worker wires its own
    try:
        detection = state.detection()
    except PrometheusAppError as exc:
        logger.warning("detection failed; the API retries: %s", exc)
        return
    finally:
        state.close()
    # The detection itself logs the dialects it found; the notes say what is missing.
    for note in detection.notes:
        logger.info("  note: %s", note)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
