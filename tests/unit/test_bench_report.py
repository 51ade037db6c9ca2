"""The benchmark's targets: which ones a size missed, and which of those fail the run."""

from __future__ import annotations

from typing import Any

from bench import report


def first_request_only(gpus: int, first_ms: float, floor_ms: float, *,
                       detected: bool = True) -> dict[str, Any]:
    """A `--only first-request` size result, as bench.run writes it."""
    return {
        "size": f"{gpus // 8}x8",
        "only": "first-request",
        "world": {"expected_gpus": gpus},
        "first_request": {
            "starts": 5,
            "first_request": {"p50_ms": first_ms},
            "floor": {"p50_ms": floor_ms},
            "p50_over_floor_p50": round(first_ms / floor_ms, 2),
            "all_200": True,
            "all_gpus_present": True,
            "all_workers_detected_before_request": detected,
        },
    }


def test_first_request_within_the_ratio_passes() -> None:
    size = first_request_only(8000, first_ms=350, floor_ms=300)
    (target,) = report.targets(size)
    assert target["met"] and target["gating"]
    assert report.missed(size) == []


def test_first_request_over_the_ratio_fails_the_run_at_1000x8() -> None:
    size = first_request_only(8000, first_ms=600, floor_ms=300)
    (missed,) = report.missed(size)
    assert missed.startswith("1000x8: first request") and "2.0x" in missed


def test_ratio_targets_are_only_shown_on_small_clusters() -> None:
    size = first_request_only(16, first_ms=16, floor_ms=10)
    (target,) = report.targets(size)
    assert not target["met"] and not target["gating"]
    assert report.missed(size) == []


def test_a_worker_still_detecting_fails_the_run_at_any_size() -> None:
    size = first_request_only(16, first_ms=10, floor_ms=10, detected=False)
    (missed,) = report.missed(size)
    assert "had not finished detecting" in missed


def test_a_failed_size_counts_as_missed() -> None:
    assert report.missed({"size": "1000x8", "error": "RuntimeError('boom')"}) == [
        "1000x8: the size failed (RuntimeError('boom'))"]
