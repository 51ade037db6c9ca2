"""A stand-in Prometheus for API tests, answering /api/v1/query through `responses`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

from tests.factories import api_body, series

PROM_URL = "http://prometheus.test:9090"
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class FakePrometheus:
    """Serve canned series per metric name; record every query it was asked."""

    def __init__(self, mock: responses.RequestsMock, base_url: str = PROM_URL) -> None:
        self.metrics: dict[str, list[dict[str, Any]]] = {}
        self.queries: list[str] = []
        self.request_ids: list[str | None] = []  # the X-Request-ID of each query
        self.failure: Callable[[], tuple[int, dict[str, str], str]] | None = None
        self.mock = mock  # other stand-ins register their endpoints on it (range_prometheus)
        for method in (responses.GET, responses.POST):
            mock.add_callback(method, f"{base_url}/api/v1/query", callback=self._answer)
            mock.add_callback(method, f"{base_url}/api/v1/labels", callback=self._labels)
        values_url = re.compile(re.escape(base_url) + r"/api/v1/label/\w+/values")
        mock.add_callback(responses.GET, values_url, callback=self._label_values)

    def add(self, metric: str, labels: dict[str, str], value: str | float) -> None:
        """Publish one series."""
        self.metrics.setdefault(metric, []).append(series(labels, value))

    def data_queries(self) -> list[str]:
        """The queries that asked for data: not detection's series count, not the probe."""
        return [q for q in self.queries
                if not q.startswith("count by (__name__)") and q != "vector(1)"]

    def _answer(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        params = parse_qs(urlsplit(request.url).query)
        if request.body:
            body = request.body if isinstance(request.body, str) else request.body.decode()
            params.update(parse_qs(body))
        query = params["query"][0]
        self.queries.append(query)
        self.request_ids.append(request.headers.get("X-Request-ID"))
        if self.failure is not None:
            return self.failure()
        if query.startswith("count by (__name__)"):
            # Auto-detection: how many series each metric has, like Prometheus would say.
            counts = [{"metric": {"__name__": name}, "value": [1.0, str(len(items))]}
                      for name, items in self.metrics.items() if name in query]
            return 200, {}, json.dumps(api_body(*counts))
        if query == "vector(1)":
            return 200, {}, json.dumps(api_body({"metric": {}, "value": [1.0, "1"]}))
        found: list[dict[str, Any]] = []
        for name in set(_NAME.findall(query)) & set(self.metrics):
            found.extend(self.metrics[name])
        return 200, {"Content-Type": "application/json"}, json.dumps(api_body(*found))

    def _labels(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        params = parse_qs(urlsplit(request.url).query)
        if request.body:
            body = request.body if isinstance(request.body, str) else request.body.decode()
            params.update(parse_qs(body))
        if self.failure is not None:
            return self.failure()
        names: set[str] = set()
        for selector in params.get("match[]", []):
            for item in self.metrics.get(selector, []):
                names.update(item["metric"])
        return 200, {}, json.dumps({"status": "success", "data": sorted(names | {"__name__"})})

    def _label_values(self, request: requests.PreparedRequest,
                      ) -> tuple[int, dict[str, str], str]:
        """A label's values over every series (or those `match[]` names, by metric name)."""
        url = urlsplit(request.url)
        label = url.path.rsplit("/", 2)[-2]
        if self.failure is not None:
            return self.failure()
        selectors = parse_qs(url.query).get("match[]")
        values: set[str] = set()
        for name, items in self.metrics.items():
            if selectors is not None and name not in selectors:
                continue
            values.update(item["metric"][label] for item in items if label in item["metric"])
            if label == "__name__" and items:
                values.add(name)
        return 200, {}, json.dumps({"status": "success", "data": sorted(values)})
