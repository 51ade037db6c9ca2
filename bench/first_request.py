"""The first GET /api/v1/gpu/metrics of a freshly started gunicorn, against the floor.

A worker detects the exporter dialects when it starts, in the background; a request
should not pay for that. Each round starts gunicorn as shipped (gunicorn.conf.py, 2
workers, auto-detection, the default cache), sends the first GPU list a fixed delay after
`/api/livez` first answers, and stops it again. The floor (the same fan-out sent straight
to Prometheus) is measured just before each start and just after each first request, so
both see the same Prometheus.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypedDict

import orjson

from bench.floor import FloorClient
from bench.service import GunicornService, HttpClient
from bench.stats import Summary, percentile, ratio
from bench.world import World

logger = logging.getLogger("bench")

PATH = "/api/v1/gpu/metrics"
IDENTITY = {"Accept-Encoding": "identity"}
# What a worker logs when its detection is done (app/dialects/detect.py).
_DETECTED = re.compile(rb"reading GPU metrics as: .*?(?:\(detected in (\d+) ms\))?$", re.M)


class FirstStart(TypedDict):
    """One fresh start: its first GPU list, the floor around it, what the workers had done."""

    first_request_ms: float
    floor_before_ms: float
    floor_after_ms: float
    status: int
    gpus: int | None
    sent_after_livez_s: float
    live_after_start_s: float
    workers_detected_before_request: int
    detection_ms_in_workers: list[int]
    served_by_worker: int | None
    workers: list[int]
    ratio_to_floor: float | None


class FirstRequestResult(TypedDict):
    """Several fresh starts: p50s of the first requests and the floors, and checks."""

    starts: int
    delay_after_livez_s: float
    first_request: dict[str, float]  # a Summary as a dict
    floor: dict[str, float]
    p50_over_floor_p50: float | None
    per_start_ratio_p50: float | None
    all_200: bool
    expected_gpus: int
    all_gpus_present: bool
    all_workers_detected_before_request: bool
    rounds: list[FirstStart]


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _detections(service: GunicornService) -> list[int | None]:
    """The workers' "detected" log lines so far, each with its duration in ms if given."""
    try:
        text = service.log_path.read_bytes()
    except OSError:
        return []
    return [int(m.group(1)) if m.group(1) else None for m in _DETECTED.finditer(text)]


def _one_start(name: str, world: World, floor: FloorClient, log_dir: Path,
               delay_s: float) -> FirstStart:
    """Floor, fresh gunicorn, its first GPU list `delay_s` after livez, floor again."""
    floor_before = _timed(floor.fetch)
    with GunicornService(name, world.prometheus_url, log_dir) as service:
        assert service.started_at is not None and service.live_at is not None
        # The protocol, not a synchronization: the request comes this long after livez.
        time.sleep(max(0.0, service.live_at + delay_s - time.monotonic()))
        detected = _detections(service)
        client = HttpClient(service.port)
        try:
            sent_after = time.monotonic() - service.live_at
            started = time.perf_counter()
            reply = client.get(PATH, IDENTITY)
            elapsed = time.perf_counter() - started
            port = client.local_port
            worker = service.worker_holding(port) if port is not None else None
        finally:
            client.close()
        floor_after = _timed(floor.fetch)
        gpus = None
        if reply.status == 200:
            gpus = len(orjson.loads(reply.body).get("data") or [])
        first_ms = round(elapsed * 1000, 1)
        before_ms, after_ms = round(floor_before * 1000, 1), round(floor_after * 1000, 1)
        out: FirstStart = {
            "first_request_ms": first_ms,
            "floor_before_ms": before_ms,
            "floor_after_ms": after_ms,
            "status": reply.status,
            "gpus": gpus,
            "sent_after_livez_s": round(sent_after, 2),
            "live_after_start_s": round(service.live_at - service.started_at, 2),
            # Each worker logs once when its detection is done: both, before the request.
            "workers_detected_before_request": len(detected),
            "detection_ms_in_workers": [ms for ms in detected if ms is not None],
            "served_by_worker": worker,
            "workers": service.worker_pids(),
            "ratio_to_floor": ratio(first_ms, (before_ms + after_ms) / 2),
        }
    logger.info("%s: first request %.0f ms (floor %.0f / %.0f ms); %d workers had detected",
                name, out["first_request_ms"], out["floor_before_ms"], out["floor_after_ms"],
                out["workers_detected_before_request"])
    return out


def measure(world: World, floor: FloorClient, log_dir: Path, *, starts: int,
            delay_s: float, workers: int = 2) -> FirstRequestResult:
    """Several fresh starts; the first requests' and the floors' p50 and their ratio."""
    rounds = [_one_start(f"first-request-{world.size.label}-{i + 1}", world, floor, log_dir,
                         delay_s) for i in range(starts)]
    firsts = [r["first_request_ms"] / 1000 for r in rounds if r["status"] == 200]
    floors = [r[k] / 1000 for r in rounds for k in ("floor_before_ms", "floor_after_ms")]
    first_summary, floor_summary = Summary.of(firsts), Summary.of(floors)
    per_start = [r["ratio_to_floor"] for r in rounds if r["status"] == 200
                 and r["ratio_to_floor"] is not None]
    return {
        "starts": starts,
        "delay_after_livez_s": delay_s,
        "first_request": asdict(first_summary),
        "floor": asdict(floor_summary),
        "p50_over_floor_p50": ratio(first_summary.p50_ms, floor_summary.p50_ms),
        "per_start_ratio_p50": round(percentile(per_start, 50), 2) if per_start else None,
        "all_200": all(r["status"] == 200 for r in rounds),
        "expected_gpus": world.expected_gpus,
        "all_gpus_present": all(r["gpus"] == world.expected_gpus for r in rounds),
        "all_workers_detected_before_request": all(
            r["workers_detected_before_request"] >= workers for r in rounds),
        "rounds": rounds,
    }
