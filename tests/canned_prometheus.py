"""A stand-in Prometheus client for service tests: canned series, selected as PromQL would.

The services receive the client as an argument and call `query_each` / `query_many`; this
object answers those from series published with `add()`. Each query is answered with the
series of the metric it leads with that match any of that metric's selectors in the query
(label matchers `=`, `!=`, `=~`, `!~` are honoured, so filters pushed into PromQL narrow
the answer as a real Prometheus would). What it leaves out of PromQL, on purpose:
aggregation (series keep all their labels), and the right-hand side of `and` / `unless`
(the services use them against `up` and against a field's earlier source; the tests that
use this fake publish no series those operators would remove).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Hashable, Iterator, Mapping
from typing import Any, TypeVar

from app.prometheus.client import QueryResult
from tests.factories import SAMPLE_TIME, series

K = TypeVar("K", bound=Hashable)

_STRING = r'"(?:[^"\\]|\\.)*"'
# One token of PromQL that matters here: a string literal (skipped), a label list of a
# grouping or matching modifier (skipped), or a name with its matchers and a call's "(".
_TOKEN = re.compile(
    rf"(?P<string>{_STRING})"
    r"|(?P<grouping>\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))"
    rf"|(?P<name>[a-zA-Z_:][\w:]*)\s*(?P<matchers>\{{(?:{_STRING}|[^\"}}])*\}})?"
    r"(?P<call>\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\()?"
)
_MATCHER = re.compile(rf"\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*({_STRING})\s*(?:,|$)")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})

Matcher = tuple[str, str, str]


def _matchers(text: str) -> list[Matcher]:
    """Parse the inside of `{...}`; fails loudly on anything this fake does not understand."""
    inner = text[1:-1].strip()
    found: list[Matcher] = []
    position = 0
    while position < len(inner):
        match = _MATCHER.match(inner, position)
        assert match is not None, f"cannot read the matchers {text!r}"
        label, operator, literal = match.groups()
        found.append((label, operator, ast.literal_eval(literal)))
        position = match.end()
    return found


def selectors(promql: str) -> list[tuple[str, list[Matcher]]]:
    """Every vector selector of the query, in order: (metric name, matchers)."""
    found = []
    for token in _TOKEN.finditer(promql):
        name = token.group("name")
        if name is None or token.group("call") or name in _KEYWORDS:
            continue  # a string, a label list, a function or aggregation, an operator
        found.append((name, _matchers(token.group("matchers") or "{}")))
    return found


def _holds(labels: Mapping[str, str], matcher: Matcher) -> bool:
    label, operator, value = matcher
    actual = labels.get(label, "")  # an absent label reads as empty, as in PromQL
    if operator == "=":
        return actual == value
    if operator == "!=":
        return actual != value
    matched = re.fullmatch(value, actual) is not None  # PromQL regexes are anchored
    return matched if operator == "=~" else not matched


class CannedPrometheus:
    """Answer the services' queries from published series; record every query asked."""

    def __init__(self) -> None:
        self.published: dict[str, list[dict[str, Any]]] = {}
        self.queries: list[str] = []

    def add(self, metric: str, labels: Mapping[str, str], value: str | float,
            ts: float = SAMPLE_TIME) -> None:
        """Publish one series of `metric`."""
        self.published.setdefault(metric, []).append(series(dict(labels), value, ts))

    def query(self, promql: str) -> QueryResult:
        """Answer one instant query."""
        self.queries.append(promql)
        found = selectors(promql)
        if not found:
            return QueryResult(result_type="vector", series=[])
        leading = found[0][0]
        picked: dict[int, dict[str, Any]] = {}
        for metric, matchers in found:
            if metric != leading:
                continue
            for item in self.published.get(metric, []):
                if all(_holds(item["metric"], m) for m in matchers):
                    picked.setdefault(id(item), item)  # `or` is a union of series
        return QueryResult(result_type="vector", series=list(picked.values()))

    def query_many(self, queries: Mapping[K, str]) -> dict[K, QueryResult]:
        """Answer several queries, like PrometheusClient.query_many."""
        return dict(self.query_each(queries))

    def query_each(self, queries: Mapping[K, str]) -> Iterator[tuple[K, QueryResult]]:
        """Yield each answer, in reverse order: the services must not rely on the order."""
        for key, promql in reversed(list(queries.items())):
            yield key, self.query(promql)
