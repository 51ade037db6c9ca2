"""Build PromQL text. Every label value passes through `quote`, the one escaping helper."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# RE2 metacharacters; a backslash before any of them makes it literal.
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")
_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """Return `value` as a double-quoted PromQL string literal that no input can break out of."""
    out = []
    for char in value:
        if char in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def regex_literal(value: str) -> str:
    """Escape `value` so that an RE2 regex matches exactly it."""
    return _RE2_SPECIAL.sub(r"\\\1", value)


def check_label_name(name: str) -> str:
    """Return `name` if it is a valid label name, else raise ValueError."""
    if not LABEL_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid Prometheus label name")
    return name


def check_metric_name(name: str) -> str:
    """Return `name` if it is a valid metric name, else raise ValueError."""
    if not METRIC_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid Prometheus metric name")
    return name


def equals_any(label: str, values: Sequence[str]) -> str:
    """Return a matcher for `label` equal to one of `values` (exact, not a pattern)."""
    check_label_name(label)
    if len(values) == 1:
        return f"{label}={quote(values[0])}"
    return f"{label}=~{quote('|'.join(regex_literal(v) for v in values))}"


def selector(metric: str, matchers: Iterable[str] = ()) -> str:
    """Return `metric{m1, m2}`, or the bare name without matchers."""
    parts = list(matchers)
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def filtered_selector(
    metric: str,
    filters: Sequence[tuple[Sequence[str], Sequence[str]]],
    fixed: Sequence[str] = (),
) -> str:
    """Select `metric` where each filter's values match at least one of its candidate labels.

    A filter is (candidate label names, wanted values): the same fact may be spelt `node`
    in one exporter and `hostname` in another, so each combination of spellings becomes one
    selector, joined with `or`. `fixed` matchers (built by our code, never from input) are
    added to every selector.
    """
    if not filters and not fixed:
        return metric
    parts = selectors(metric, filters, fixed)
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def selectors(
    metric: str,
    filters: Sequence[tuple[Sequence[str], Sequence[str]]],
    fixed: Sequence[str] = (),
) -> list[str]:
    """The plain selectors `filtered_selector` joins with `or`, one per spelling.

    Range functions, `offset`, `@` and `timestamp()` apply to one selector at a time.
    """
    choices = [[equals_any(label, values) for label in labels] for labels, values in filters]
    return [selector(metric, [*fixed, *combo]) for combo in itertools.product(*choices)]


def aggregate(operator: str, by: Sequence[str], expression: str) -> str:
    """Return `operator by (labels) (expression)`, keeping only the labels we read."""
    labels = ", ".join(check_label_name(label) for label in by)
    return f"{operator} by ({labels}) ({expression})"

