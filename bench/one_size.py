"""Run one size in a process of its own: `python -m bench.one_size --size 1000x8 --out f.json`.

`python -m bench` starts one of these per size, so the app code the benchmark imports (for
the PromQL plan and the stage timings) is the code gunicorn loads for that size, even when
app/ changes between sizes.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import orjson

from bench import report
from bench.run import ONLY_CHOICES, Budget, run_size
from bench.world import Size


def _terminate(signum: int, frame: object) -> None:
    # The parent forwards SIGTERM: unwind like Ctrl-C so every finally block runs.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Measure one size and write its JSON; exit 0, 1 (failed) or 130 (interrupted)."""
    parser = argparse.ArgumentParser(prog="python -m bench.one_size")
    parser.add_argument("--size", type=Size.parse, required=True)
    parser.add_argument("--dialect", default="dcgm")
    parser.add_argument("--scrape-interval", type=int, default=15)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--cold-duration", type=int, default=10)
    parser.add_argument("--first-request-starts", type=int, default=5)
    parser.add_argument("--only", choices=ONLY_CHOICES)
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    budget = Budget(duration_s=args.duration,
                    cold_wrk_s=min(args.cold_duration, args.duration),
                    first_request_starts=args.first_request_starts)
    try:
        result = run_size(args.size, args.dialect, args.scrape_interval, budget, args.log_dir,
                          only=args.only)
        result["targets"] = report.targets(result)
        status = 0
    except KeyboardInterrupt:
        logging.getLogger("bench").error("interrupted; everything started was stopped")
        result, status = {"size": args.size.label, "error": "interrupted"}, 130
    except Exception as exc:  # the parent reports it and goes on with the next size
        logging.getLogger("bench").exception("size %s failed", args.size.label)
        result, status = {"size": args.size.label, "error": repr(exc)}, 1
    args.out.write_bytes(orjson.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
