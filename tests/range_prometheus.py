"""`/api/v1/query_range` for the stubbed Prometheus of API tests, answered by the test.

A range query's PromQL is far from a metric name, so the test decides: `answer(query)`
returns the matrix for a query (dispatching on the text it expects in it). Every call is
recorded with its parameters, so tests can check the window and step sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

from tests.fakes import PROM_URL, FakePrometheus

Matrix = list[dict[str, Any]]


@dataclass(frozen=True)
class RangeCall:
    """One query_range as Prometheus received it."""

    query: str
    start: float
    end: float
    step: float
    method: str


def range_series(labels: dict[str, str], points: Sequence[tuple[float, float | str]]
                 ) -> dict[str, Any]:
    """One matrix element, values as text the way Prometheus writes them."""
    return {"metric": dict(labels),
            "values": [[t, v if isinstance(v, str) else repr(v)] for t, v in points]}


def request_params(request: requests.PreparedRequest) -> dict[str, str]:
    """The query parameters of a GET, or the form of a POST."""
    params = parse_qs(urlsplit(request.url or "").query)
    if request.body:
        body = request.body if isinstance(request.body, str) else request.body.decode()
        params.update(parse_qs(body))
    return {key: values[0] for key, values in params.items()}


class RangePrometheus:
    """Answers query_range on a FakePrometheus' mock; `answer` is the test's to set."""

    def __init__(self, fake: FakePrometheus, base_url: str = PROM_URL) -> None:
        self.fake = fake
        self.calls: list[RangeCall] = []
        self.answer: Callable[[str], Matrix] = lambda query: []
        self.failure: tuple[int, dict[str, Any]] | None = None
        for method in (responses.GET, responses.POST):
            fake.mock.add_callback(method, f"{base_url}/api/v1/query_range",
                                   callback=self._respond)

    def _respond(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        params = request_params(request)
        self.calls.append(RangeCall(params["query"], float(params["start"]),
                                    float(params["end"]), float(params["step"]),
                                    request.method or ""))
        if self.failure is not None:
            status, body = self.failure
            return status, {}, json.dumps(body)
        body = {"status": "success",
                "data": {"resultType": "matrix", "result": self.answer(params["query"])}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    def instant_times(self) -> list[str | None]:
        """The `time` parameter of every instant query the fake received (None: absent)."""
        return [request_params(call.request).get("time")
                for call in self.fake.mock.calls
                if urlsplit(call.request.url or "").path.endswith("/api/v1/query")]
