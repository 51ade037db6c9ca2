"""Benchmark the dashboard's first paint at cluster scale, in a real headless Chromium.

    .venv/bin/python -m bench.first_paint [--size 1000x8] [--rounds 7] [--out FILE]

A simulated dcgm cluster (with health counters and the fleet scenario) scraped every 15 s
by a real Prometheus (`bench/world.py`), the service under gunicorn as shipped (its
response cache on), and Debian's Chromium driven by selenium. Two cache states:

- **cold**: once Prometheus runs no query, after waiting out the cache (CACHE_TTL +
  CACHE_STALE_SECONDS + 1 s) in a page that polls nothing, so the GPU list is a whole
  fan-out: what the first visitor of a quiet cluster waits for;
- **warm**: once Prometheus is idle again, every gunicorn worker's cache holds the GPU
  list (each worker has its own; rounds of concurrent list requests until three rounds in a
  row are all cache-fast): what a visitor waits for while dashboards poll.

In each state, **page**: a fresh load of `/`; first paint is the page's own `gpu-rows-drawn`
mark (after the first frame with GPU rows was laid out and painted; an answer of more than
300 rows draws the top 300 first), from the navigation's start; `gpu-rows-complete` is when
every row is in the table. **baseline**: in the loaded page, `fetch("api/v1/gpu/metrics")`
and `response.json()` alone: what any client pays for the same rows in the same state.

Reported: p50/p90 of each, the ratios page/baseline, the rows in the table. Exit status 0
when the warm first paint's p50 is under --target-ms (2,000 ms, the issue's goal on this
2-core machine), 1 when not or when a round failed, 2 when a tool is missing. The cold
figures are reported, not enforced: they are bounded below by the API's own fan-out.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import requests
from selenium import webdriver

from bench.cli import finish, ready_to_run, run_measured
from bench.history import wait_prometheus_idle
from bench.service import ROOT, GunicornService
from bench.stats import Summary, ratio
from bench.world import Size, World
from tests.integration.browser import chromium

logger = logging.getLogger("bench.first_paint")
DEFAULT_OUT = ROOT / "bench" / "results" / "first_paint.json"
FIRST_PAINT = """
    const done = arguments[arguments.length - 1];
    const wait = () => {
      const drawn = performance.getEntriesByName('gpu-rows-drawn')[0];
      if (drawn && document.body.dataset.rowsComplete) {
        const complete = performance.getEntriesByName('gpu-rows-complete')[0];
        done([drawn.startTime, complete ? complete.startTime : drawn.startTime,
              document.querySelectorAll('#gpus tbody tr').length]);
      } else setTimeout(wait, 20);
    };
    wait();
"""
BASELINE = """
    const done = arguments[arguments.length - 1];
    const started = performance.now();
    fetch(arguments[0], {cache: 'no-store'}).then(r => r.json())
      .then(body => done([performance.now() - started, body.data.length]))
      .catch(error => done([null, String(error)]));
"""
# The shipped CACHE_TTL (5 s) and CACHE_STALE_SECONDS (5 s), and a second to spare.
COLD_WAIT_S = 11.0
SCRIPT_TIMEOUT_S = 300
# Warming: rounds of concurrent list requests until a few rounds in a row are cache hits
# (a hit of 8,000 rows takes well under a second here; a fan-out, seconds).
CONCURRENT, WARM_ROUNDS, WARM_FAST_S = 4, 3, 1.0


def warm_every_worker(list_url: str) -> int:
    """Ask for the GPU list until every gunicorn worker answers it from its cache.

    Each worker has a cache of its own, and the kernel picks which one accepts a
    connection, so one request warms one worker at best. Rounds of CONCURRENT requests on
    fresh connections go on until WARM_ROUNDS rounds in a row are all faster than a fan-out
    could be (WARM_FAST_S); the requests sent."""
    sent, fast_rounds = 0, 0
    deadline = time.monotonic() + 300
    with ThreadPoolExecutor(CONCURRENT) as pool:
        while fast_rounds < WARM_ROUNDS:
            if time.monotonic() > deadline:
                raise RuntimeError("the GPU list did not come from every worker's cache")
            took = list(pool.map(lambda _: timed_get(list_url), range(CONCURRENT)))
            sent += CONCURRENT
            fast_rounds = fast_rounds + 1 if max(took) < WARM_FAST_S else 0
    return sent


def timed_get(url: str) -> float:
    """Seconds for one GET on a connection of its own, its body read."""
    started = time.monotonic()
    response = requests.get(url, timeout=300, headers={"Connection": "close"})
    response.raise_for_status()
    return time.monotonic() - started


def browser_cpu_s(browser: webdriver.Chrome) -> float:
    """CPU seconds of every Chromium process under chromedriver, so far.

    This process reaps chromedriver (so its own accounting counts it) but not Chromium,
    whose CPU it would otherwise count as someone else's load."""
    driver = psutil.Process(browser.service.process.pid)
    total = 0.0
    for process in driver.children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def measure(url: str, prometheus_url: str, rounds: int) -> dict[str, Any]:
    """In one browser, each round: a cold page, a warm baseline and a warm page, a cold
    baseline."""
    got: dict[str, list[float]] = {name: [] for name in (
        "cold_page", "warm_page", "cold_baseline", "warm_baseline", "cold_complete",
        "warm_complete")}
    rows_drawn: set[int] = set()
    failures: list[str] = []
    waited: dict[str, list[float]] = {"prometheus_idle": [], "warming_requests": []}
    list_url = url + "api/v1/gpu/metrics"

    def page(state: str) -> None:
        browser.get(url)
        painted, complete, rows = browser.execute_async_script(FIRST_PAINT)
        got[f"{state}_page"].append(float(painted) / 1000.0)
        got[f"{state}_complete"].append(float(complete) / 1000.0)
        rows_drawn.add(int(rows))

    def baseline(state: str) -> None:
        elapsed, answer = browser.execute_async_script(BASELINE, list_url)
        if elapsed is None:
            failures.append(f"{state} baseline fetch failed: {answer}")
        else:
            got[f"{state}_baseline"].append(float(elapsed) / 1000.0)

    def settle() -> None:
        """Load the page once with its refresh an hour away; once Prometheus has answered
        everything asked so far, wait out the cache.

        The JSON answers' CSP forbids a fetch from them, so the cold baseline runs in a
        page too, one that polls nothing while the cache entry of the GPU list expires. A
        cold request meets an idle Prometheus, not the window figures of the page before."""
        browser.get(url + "?refresh=3600")
        browser.execute_async_script(FIRST_PAINT)
        quiet()
        time.sleep(COLD_WAIT_S)

    def quiet() -> None:
        time.sleep(1.0)  # the page's window figures and sparklines are asked by now
        waited["prometheus_idle"].append(wait_prometheus_idle(prometheus_url))

    # A round at 1000x8 on a busy machine can wait minutes for a cold list; the driver's
    # calls outlast the script timeout so a slow round is measured, not a client error.
    with chromium(command_timeout_s=SCRIPT_TIMEOUT_S + 30) as browser:
        browser.set_script_timeout(SCRIPT_TIMEOUT_S)
        browser.set_page_load_timeout(SCRIPT_TIMEOUT_S)
        browser.get(url)  # untimed: the first visit warms the browser and the workers
        browser.execute_async_script(FIRST_PAINT)
        for number in range(rounds):
            logger.info("round %d of %d", number + 1, rounds)
            settle()
            page("cold")
            quiet()  # the cold page's window figures are not the warm page's load
            waited["warming_requests"].append(warm_every_worker(list_url))
            baseline("warm")
            page("warm")
            settle()
            baseline("cold")
        cpu_s = browser_cpu_s(browser)
    summaries = {name: Summary.of(values) for name, values in got.items()}
    result: dict[str, Any] = {name: asdict(summary) for name, summary in summaries.items()}
    for state in ("cold", "warm"):
        page_summary, base = summaries[f"{state}_page"], summaries[f"{state}_baseline"]
        result[f"{state}_ratio_p50"] = ratio(page_summary.p50_ms, base.p50_ms)
        result[f"{state}_ratio_p90"] = ratio(page_summary.p90_ms, base.p90_ms)
    return {**result, "rows_drawn": sorted(rows_drawn), "failures": failures,
            "rounds": rounds, "waited": waited, "browser_cpu_s": round(cpu_s, 1)}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start the world and the service; measure; stop everything."""
    with World(args.size, "dcgm-health-all", scrape_interval_s=15, fleet=True) as world:
        document: dict[str, Any] = {"size": args.size.label, "rows": world.expected_gpus}
        with GunicornService("first-paint", world.prometheus_url, work) as service:
            document.update(measure(service.url + "/", world.prometheus_url, args.rounds))
    return document


def table(document: dict[str, Any]) -> str:
    """The figures, as a few lines."""
    lines = [f"{document['size']}: {document['rows_drawn']} rows in the table"]
    for state in ("cold", "warm"):
        page, base = document[f"{state}_page"], document[f"{state}_baseline"]
        complete = document[f"{state}_complete"]
        lines.append(f"{state}: first paint p50/p90 {page['p50_ms']:.0f}/{page['p90_ms']:.0f} ms"
                     f" (all rows in the DOM {complete['p50_ms']:.0f}/"
                     f"{complete['p90_ms']:.0f}); GPU list fetch alone "
                     f"{base['p50_ms']:.0f}/{base['p90_ms']:.0f} ms; ratio "
                     f"{document[f'{state}_ratio_p50']}/{document[f'{state}_ratio_p90']}")
    return "\n".join(lines)


def missed_targets(document: dict[str, Any], target_ms: float) -> list[str]:
    """What fails the run."""
    missed = list(document.get("failures", []))
    page = document.get("warm_page")
    if page is None:
        missed.append("the page was not measured")
    elif page["p50_ms"] is None or page["p50_ms"] > target_ms:
        missed.append(f"warm first paint p50 {page['p50_ms']} ms is over {target_ms:.0f} ms")
    if page is not None and document.get("rows_drawn") != [document.get("rows")]:
        missed.append(f"rows in the table {document.get('rows_drawn')}, expected "
                      f"{document['rows']}")
    return missed


def main(argv: list[str] | None = None) -> int:
    """Run the first-paint benchmark; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.first_paint",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=Size.parse, default=Size(1000, 8),
                        help="NODESxGPUS (default 1000x8)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--target-ms", type=float, default=2000.0,
                        help="largest first-paint p50 in ms (default 2000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON results (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if not ready_to_run("prometheus", "chromium", "chromedriver"):
        return 2
    document, status = run_measured("bench.first_paint", argv, "gpu-bench-paint-",
                                    partial(run, args))
    if "warm_page" in document:
        print(table(document))
    return finish(document, args.out, missed_targets(document, args.target_ms), status)


if __name__ == "__main__":
    sys.exit(main())
