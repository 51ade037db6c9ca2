"""Read PromQL text the way its parser would, to check what a query selects and matches."""

from __future__ import annotations

import re

_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')


def code_of(promql: str) -> str:
    """The query without its string literals: what PromQL parses as selectors and operators."""
    return _STRING_LITERAL.sub("", promql)


def reads(promql: str, metric: str) -> bool:
    """Whether the query selects `metric` (outside any string literal)."""
    return re.search(rf"(?<![\w:]){re.escape(metric)}(?![\w:])", code_of(promql)) is not None


def carries(promql: str, label: str, literal: str) -> bool:
    """Whether the query has the matcher `label=literal` (not one on a longer label name)."""
    return re.search(rf"(?<![\w]){re.escape(label)}={re.escape(literal)}", promql) is not None
