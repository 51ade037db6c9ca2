"""Where a cold request's time goes: the service's own stages, timed one by one in-process.

Every stage calls the app's real code on a real Prometheus answer: fetch (HTTP and parse,
with the app's PrometheusClient), parse alone (orjson on the captured bodies), join
(`join_gpus`), dump (the marshmallow `GpuSchema`), JSON (the envelope via orjson) and the
ETag hash. `produce` is the whole of what the view does on a miss, end to end.
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import logging
import runpy
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypedDict, TypeVar

import orjson

from app.api.envelope import envelope_bytes
from app.api.gpu import ROW_HEALTH, dump_gpus, idle_rule
from app.cache import make_entry
from app.prometheus.client import QueryResult
from app.schemas.gpu import GpuSchema
from app.services.gpu_join import join_gpus
from app.services.gpus import list_gpus
from app.services.records import Gpu, GpuFilters
from bench.floor import FloorClient, Plan

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
MESSAGE = "GPU metrics retrieved successfully"
T = TypeVar("T")
P = ParamSpec("P")
# Prometheus' answers keyed like the service's fan-out: (dialect name, *query key).
Results = dict[tuple[str, ...], QueryResult]
Dump = Callable[[list[Gpu]], list[dict[str, Any]]]
_MARSHMALLOW = GpuSchema(many=True)


class ProfileRow(TypedDict):
    """One function of the profile: where it is, how often it ran, its own and total time."""

    function: str
    calls: int
    own_ms: float
    cumulative_ms: float


def _parse(bodies: dict[tuple[str, ...], bytes]) -> Results:
    results = {}
    for key, body in bodies.items():
        data = orjson.loads(body)["data"]
        results[key] = QueryResult(result_type=data["resultType"], series=data["result"])
    return results


def measure(plan: Plan, floor: FloorClient, *, count: int = 7,
            budget_s: float = 15.0) -> dict[str, Any]:
    """Time each stage of the cold path; return medians in ms and a short profile.

    Each round runs the stages as a pipeline, as the service does (fetch, parse, join,
    dump, JSON), keeping alive only what the next stage needs: the cyclic garbage
    collector's cost grows with live objects, so this matches a worker's heap.
    """
    filters = GpuFilters()
    dump, facts_dump = view_dumper()

    def join(results: Results) -> list[Gpu]:
        rows = []
        for dialect in plan.dialects:
            mine = {key[1:]: r for key, r in results.items() if key[0] == dialect.name}
            rows.extend(join_gpus(dialect, mine, filters))
        return rows

    def produce() -> bytes:
        # What the view runs on a cache miss (detection is already cached there).
        rows = list_gpus(plan.client, plan.dialects, filters, health=ROW_HEALTH,
                         idle=idle_rule(plan.config))
        return make_entry(envelope_bytes(dump(rows), MESSAGE)).body

    samples: dict[str, list[float]] = {name: [] for name in (
        "fetch_raw_ms", "parse_only_ms", "join_ms", "dump_ms", "json_ms", "etag_ms",
        "fetch_and_parse_ms", "produce_ms", "parse_join_dump_gc_off_ms",
        "dump_marshmallow_ms", "validate_ms", "app_fetch_only_ms", "join_add_ms",
        "join_finish_ms")}
    facts: dict[str, Any] = {"dump_implementation": facts_dump}
    with worker_gc_settings() as gc_settings:
        facts["gc_settings"] = gc_settings
        _rounds(plan, floor, join, dump, produce, samples, facts, count, budget_s)
        bodies = floor.fetch()
        profile = _profile(lambda: dump(join(_parse(bodies))))
    stages: dict[str, Any] = {
        name: round(statistics.median(values) * 1000.0, 3) if values else None
        for name, values in samples.items()
    }
    stages["samples_ms"] = {name: [round(v * 1000.0, 1) for v in values]
                            for name, values in samples.items()}
    stages["rounds"] = len(samples["produce_ms"])
    return {**stages, **facts, "profile_top": profile}


def _rounds(plan: Plan, floor: FloorClient, join: Callable[[Results], list[Gpu]],
            dump: Dump, produce: Callable[[], bytes],
            samples: dict[str, list[float]], facts: dict[str, Any], count: int,
            budget_s: float) -> None:
    """Run `count` rounds (or until `budget_s`), each step once per round, order rotating."""
    clock = _Clock(samples)
    split_join = _split_join(plan, clock)

    def validate(payloads: list[dict[str, Any]]) -> list[QueryResult]:
        return [plan.client.parse_result(p) for p in payloads]

    def cpu_stages(bodies: dict[tuple[str, ...], bytes]) -> list[dict[str, Any]]:
        return dump(join(_parse(bodies)))

    def pipeline() -> None:
        # Arguments, not closures: each stage's input is freed by the `del` after it.
        bodies = clock.time("fetch_raw_ms", floor.fetch)
        results = clock.time("parse_only_ms", _parse, bodies)
        facts["series_per_query"] = {"/".join(k): len(r.series) for k, r in results.items()}
        gpus = clock.time("join_ms", join, results)
        if split_join is not None:
            split_join(results)
        del results
        data = clock.time("dump_ms", dump, gpus)
        # For reference: the schema's own dump, which the view used before compile_dumper.
        clock.time("dump_marshmallow_ms", _MARSHMALLOW.dump, gpus)
        facts["gpus"] = len(gpus)
        del gpus
        body = clock.time("json_ms", envelope_bytes, data, MESSAGE)
        del data
        clock.time("etag_ms", make_entry, body)
        facts["body_bytes"] = len(body)
        facts["prometheus_bytes"] = sum(len(b) for b in bodies.values())
        payloads = [orjson.loads(b) for b in bodies.values()]
        clock.time("validate_ms", validate, payloads)
        del payloads
        # The same CPU stages with the cyclic GC off: how much of them is collection.
        gc.disable()
        try:
            clock.time("parse_join_dump_gc_off_ms", cpu_stages, bodies)
        finally:
            gc.enable()

    steps: list[Callable[[], object]] = [
        pipeline,
        # The app's own client: HTTP, then parse and check in its query threads.
        lambda: clock.time("fetch_and_parse_ms", lambda: plan.client.query_many(plan.queries)),
        lambda: clock.time("produce_ms", produce),
        # The same client's HTTP layer alone (sessions, streaming reads), parsing nothing.
        lambda: clock.time("app_fetch_only_ms", lambda: plan.client.query_many_raw(plan.queries)),
    ]
    started = time.monotonic()
    for round_number in range(count):
        if time.monotonic() - started >= budget_s and round_number >= 3:
            break
        # Rotate, so a slow phase of Prometheus does not always hit the same step.
        shift = round_number % len(steps)
        for step in steps[shift:] + steps[:shift]:
            step()


def _split_join(plan: Plan, clock: _Clock) -> Callable[[Results], None] | None:
    """Time the incremental join's two halves, if the app has one (GpuJoin).

    The service feeds each answer to `add` as it arrives, overlapping with Prometheus;
    `finish` (derived memory, pods, filter, sort) runs only after the last answer.
    """
    from app.services import gpu_join as module
    incremental = getattr(module, "GpuJoin", None)
    if incremental is None:
        return None
    filters = GpuFilters()

    def run(results: Results) -> None:
        joins = []
        t0 = time.perf_counter()
        for dialect in plan.dialects:
            mine = {key[1:]: r for key, r in results.items() if key[0] == dialect.name}
            join = incremental(dialect, mine)
            for key, result in mine.items():
                join.add(key, result)
            joins.append(join)
        t1 = time.perf_counter()
        for join in joins:
            join.finish(filters)
        t2 = time.perf_counter()
        clock.add("join_add_ms", t1 - t0)
        clock.add("join_finish_ms", t2 - t1)

    return run


def view_dumper() -> tuple[Dump, str]:
    """The function the GPU view dumps rows with."""
    return dump_gpus, f"{dump_gpus.__module__}.{dump_gpus.__qualname__}"


@contextlib.contextmanager
def worker_gc_settings() -> Iterator[dict[str, Any]]:
    """Apply the GC tuning a gunicorn worker gets (post_worker_init's tune_gc), then undo it.

    The collector's cost depends on its thresholds and on how many objects it walks, so
    stages timed here use the same settings as the deployed workers.
    """
    threshold = gc.get_threshold()
    hook = None
    try:
        config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
        hook = config.get("tune_gc")
    except Exception as exc:  # the tuning is optional; timing without it is still useful
        logger.warning("could not read gunicorn.conf.py: %s", exc)
    applied = False
    try:
        if callable(hook):
            hook()
            applied = True
        yield {"from_gunicorn_conf": applied, "threshold": list(gc.get_threshold()),
               "frozen_objects": gc.get_freeze_count()}
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class _Clock:
    """Time a call into one list of samples and hand back its result."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        self._samples = samples

    def add(self, name: str, seconds: float) -> None:
        self._samples[name].append(seconds)

    def time(self, name: str, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Return `call(*args, **kwargs)`, adding its duration to `name`'s samples."""
        t0 = time.perf_counter()
        result = call(*args, **kwargs)
        self._samples[name].append(time.perf_counter() - t0)
        return result


def _profile(call: Callable[[], object], top: int = 15) -> list[ProfileRow]:
    """cProfile one run of parse + join + dump; the heaviest functions by own time.

    The profiler's own overhead inflates many small calls; read it for proportions and
    call counts, and the stage medians for durations.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        call()
    finally:
        profiler.disable()
    # What pstats.Stats reads: {(file, line, name): (cc, nc, tottime, cumtime, callers)}.
    profiler.create_stats()
    rows: list[ProfileRow] = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in profiler.stats.items():
        rows.append({
            "function": f"{_short(filename)}:{line}({name})",
            "calls": ncalls,
            "own_ms": round(tottime * 1000.0, 1),
            "cumulative_ms": round(cumtime * 1000.0, 1),
        })
    rows.sort(key=lambda r: r["own_ms"], reverse=True)
    return rows[:top]


def _short(filename: str) -> str:
    """A profile row's file: relative to the repository or to site-packages."""
    for marker in ("/site-packages/", f"{_REPO_ROOT}/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.rsplit("/", 1)[-1]


_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
