"""The PromQL of the health rules: Prometheus finds the events, the service only reads them.

Two rounds. The first, in the GPU list's own fan-out, is one cheap pass over the window
per signal (`increase`, `max_over_time`, `changes`, `last_over_time`): which GPUs may
have fired which rule. Only when some did, a second round asks, for those GPUs alone
(their UUIDs as matchers), the first instant of the window at which each rule held: a
subquery over the window at `HealthWindow.step` evaluates the condition, `timestamp()` of
the kept samples gives that instant and `min_over_time` the first. A subquery over every
GPU costs about a second per rule at a thousand GPUs; over the few candidates, little.
A healthy cluster pays the first round only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from app.dialects.model import Dialect
from app.health.rules import RULES, XID_COUNT, XID_COUNT_LABEL, XID_GAUGE, Rule
from app.prometheus.promql import aggregate, quote, selectors
from app.services.queries import Filter, QueryKey, identity_filters
from app.services.records import GpuFilters

DEFAULT_WINDOW_S = 3600.0
# How far before the window the XID gauge is read for the codes it already held.
XID_MEMORY_S = 3600.0
# At most this many evaluation steps per window; never finer than 15 s.
WINDOW_STEPS = 120
MIN_STEP_S = 15
# The label that tags each rule's series in the one query of all rules.
RULE_LABEL = "health_rule"
TARGET_LABELS = ("instance", "job")
STAT_LABEL = "health_stat"


@dataclass(frozen=True)
class HealthWindow:
    """The window event rules look back over, in seconds."""

    seconds: float = DEFAULT_WINDOW_S

    @property
    def step(self) -> int:
        """Seconds between the instants a rule is evaluated at: `since` is this precise."""
        return max(MIN_STEP_S, int(self.seconds / WINDOW_STEPS) // MIN_STEP_S * MIN_STEP_S)


def duration(seconds: float) -> str:
    """A PromQL duration of whole seconds (at least 1s)."""
    return f"{max(1, math.ceil(seconds))}s"


# More candidates than this for one rule: the second round asks for every GPU instead
# (the matcher would outgrow a query string; the answer is the same).
MAX_NARROWED = 300
# Candidates of one dialect: per signal ("xid", "xid_count", "gone", or a rule's code),
# the GPUs to ask about, by their key (node, UUID or index, MIG instance).
Candidates = dict[str, set[tuple[str, str, str]]]


def health_queries(dialect: Dialect, filters: GpuFilters, window: HealthWindow,
                   *, vanished: bool = False) -> dict[QueryKey, str]:
    """The first round of one dialect: only for the health metrics detection found.

    `vanished` also looks for GPUs with samples in the window but none now (the health
    report lists them; the GPU list does not, and skips that pass over the window).
    """
    present = set(dialect.health_metrics)
    plan = _Plan(dialect, identity_filters(dialect, filters, on_info=False), window)
    queries: dict[QueryKey, str] = {}
    if XID_GAUGE in present:
        queries[("health", "xid_candidates")] = plan.xid_changed()
    if XID_COUNT in present:
        queries[("health", "xid_count_candidates")] = plan.xid_count_candidates()
    rules = [query for group in rule_groups(present)
             if (query := plan.rule_candidates([m for m in group[0].metrics if m in present],
                                               group))]
    if rules:
        queries[("health", "rule_candidates")] = " or ".join(rules)
    queries[("health", "seen")] = plan.seen(vanished)
    queries[("health", "targets")] = plan.targets(vanished)
    return queries


def rule_groups(present: Collection[str]) -> list[tuple[Rule, ...]]:
    """The rules whose metrics exist, those reading the same metrics in one group (the
    four throttle bits, the two DCGM health levels): the first round asks once per group,
    tagged with its first rule's code."""
    groups: dict[tuple[str, ...], list[Rule]] = {}
    for rule in RULES:
        if not set(rule.metrics) & set(present):
            continue
        groups.setdefault((rule.kind, *rule.metrics), []).append(rule)
    return [tuple(rules) for rules in groups.values()]


def followup_queries(dialect: Dialect, filters: GpuFilters, window: HealthWindow,
                     candidates: Candidates) -> dict[QueryKey, str]:
    """The second round of one dialect: the first instant of each rule, for its candidates."""
    present = set(dialect.health_metrics)
    base = identity_filters(dialect, filters, on_info=False)

    def plan(signal: str) -> _Plan:
        return _Plan(dialect, base + narrowing(dialect, candidates[signal]), window)

    queries: dict[QueryKey, str] = {}
    if candidates.get("xid"):
        queries[("health", "xid_gauge")] = plan("xid").xid_gauge_events()
        queries[("health", "xid_before")] = plan("xid").xid_gauge_before()
    if candidates.get("xid_count"):
        queries[("health", "xid_count")] = plan("xid_count").xid_count_events()
    rules = [query for rule in RULES if candidates.get(rule.code)
             if (query := plan(rule.code).rule([m for m in rule.metrics if m in present],
                                               rule))]
    if rules:
        queries[("health", "rules")] = " or ".join(rules)
    if candidates.get("gone"):
        queries[("health", "seen_gone")] = plan("gone").last_seen()
    return queries


def narrowing(dialect: Dialect, keys: set[tuple[str, str, str]]) -> list[Filter]:
    """Matchers that keep a query to the GPUs of `keys`: their UUIDs (or nodes)."""
    labels = dialect.labels
    if not keys or len(keys) > MAX_NARROWED:
        return []
    if labels.uuid:
        return [(labels.uuid, sorted({device for _, device, _ in keys}))]
    return [(labels.node, sorted({node for node, _, _ in keys}))]


class _Plan:
    """PromQL builders for one dialect, its filters and the window."""

    def __init__(self, dialect: Dialect, filters: list[Filter], window: HealthWindow) -> None:
        self.dialect = dialect
        self.filters = filters
        self.identity = dialect.labels.identity()
        self.on = f"on ({', '.join(self.identity)})"
        self.seconds = window.seconds
        self.w = duration(window.seconds)
        self.r = duration(window.step)
        self.subquery = f"[{self.w}:{self.r}]"

    def each(self, metrics: Sequence[str], template: Callable[[str], str]) -> str:
        """`template` applied to every plain selector of `metrics`, joined with `or`."""
        parts = [template(s) for m in metrics for s in selectors(m, self.filters)]
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def by(self, operator: str, expression: str, extra: Sequence[str] = ()) -> str:
        return aggregate(operator, (*self.identity, *extra), expression)

    def first_instant(self, condition: str, prefilter: str, extra: Sequence[str] = ()) -> str:
        """The first instant of the window at which `condition` held, where `prefilter`
        (pinned at the window's end) says it may have."""
        on = f"on ({', '.join((*self.identity, *extra))})"
        return f"min_over_time((timestamp({condition}) and {on} ({prefilter})){self.subquery})"

    # ------------------------------------------------------------------- candidates

    def rule_candidates(self, metrics: Sequence[str], group: Sequence[Rule]) -> str | None:
        """The GPUs that may have fired a rule of `group` in the window, tagged with the
        group's first code: one range function over the window, no subquery (`increase`
        measured faster than comparing instants at the window's ends, whose vector
        matching on every label costs more). None without any of its metrics."""
        if not metrics:
            return None
        if group[0].kind == "rise":
            found = self.by("max", self.each(metrics, lambda s: f"increase({s}[{self.w}])"))
            found += f" > {min(r.per_hour for r in group) * self.seconds / 3600:g}"
        else:
            lowest = min(r.bit if r.bit is not None else r.at_least for r in group)
            found = self.by("max", self.each(metrics, lambda s: f"max_over_time({s}"
                                                                f"[{self.w}])"))
            found += f" >= {lowest:g}"
        return f'label_replace({found}, "{RULE_LABEL}", {quote(group[0].code)}, "", "")'

    def xid_count_candidates(self) -> str:
        counted = self.by("max", self.each([XID_COUNT], lambda s: f"max_over_time({s}"
                                                                  f"[{self.w}])"))
        return f"{counted} > 0"

    # ---------------------------------------------------------------------------- XID

    def xid_changed(self) -> str:
        """GPUs whose XID gauge may have taken a new code in the window: it changed, or
        one of its series (newer exporters label each code) was not there at the window's
        start. One range function; pinned at the window's end, so a subquery reads it
        once. Codes held before the window are told apart in the second round."""
        g = [XID_GAUGE]
        changed = self.by("group", self.each(g, lambda s: f"changes({s}[{self.w}] @ end())")
                          + " > 0")
        now = self.each(g, lambda s: f"{s} @ end()")
        then = self.each(g, lambda s: f"{s} @ end() offset {self.w}")
        return f"{changed} or {self.by('group', f'{now} unless {then}')}"

    def xid_gauge_events(self) -> str:
        """Per GPU and code (label `xid`): the first instant of the window the gauge held
        the code, for the GPUs whose gauge may have changed."""
        gauge = self.each([XID_GAUGE], lambda s: s)
        return f"min_over_time(timestamp({self._codes(gauge)}){self.subquery})"

    def _codes(self, gauge: str) -> str:
        # count_values turns each value (an XID code) into a label; its name comes first.
        return (f"count_values by ({', '.join(self.identity)}) ({quote(XID_COUNT_LABEL)}, "
                f"{gauge} and {self.on} ({self.xid_changed()}))")

    def xid_gauge_before(self) -> str:
        """Per GPU and code: the codes the gauge held in the hour before the window."""
        memory = duration(XID_MEMORY_S)
        held = self.each([XID_GAUGE],
                         lambda s: f"last_over_time({s}[{memory}] offset {self.w})")
        return self._codes(held)

    def xid_count_events(self) -> str:
        """Per GPU and code: the first instant dcgm-exporter counted the code."""
        extra = (XID_COUNT_LABEL,)
        counted = self.by("max", self.each([XID_COUNT], lambda s: s), extra) + " > 0"
        recent = self.by("max", self.each([XID_COUNT], lambda s: f"max_over_time({s}"
                                                                 f"[{self.w}] @ end())"),
                         extra) + " > 0"
        return self.first_instant(counted, recent, extra)

    # -------------------------------------------------------------------------- rules

    def rule(self, metrics: Sequence[str], rule: Rule) -> str | None:
        """One rule's first instant in the window, tagged with its code; None without
        any of its metrics."""
        if not metrics:
            return None
        extra = rule.labels
        if rule.kind == "rise":
            now = self.by("max", self.each(metrics, lambda s: s), extra)
            then = self.by("max", self.each(metrics, lambda s: f"{s} offset {self.r}"), extra)
            threshold = rule.per_hour * self.seconds / 3600
            rose = self.by("max", self.each(metrics, lambda s: f"increase({s}[{self.w}] "
                                                               "@ end())"), extra)
            found = self.first_instant(f"{now} > {then}", f"{rose} > {threshold:g}", extra)
        else:
            value = self.by("max", self.each(metrics, lambda s: s), extra)
            peak = self.by("max", self.each(metrics, lambda s: f"max_over_time({s}"
                                                               f"[{self.w}] @ end())"), extra)
            if rule.bit is not None:
                condition = f"floor({value} / {rule.bit}) % 2 == 1"
                prefilter = f"{peak} >= {rule.bit}"
            else:
                condition = f"{value} >= {rule.at_least:g}"
                if rule.below is not None:
                    condition += f" < {rule.below:g}"
                prefilter = f"{peak} >= {rule.at_least:g}"
            found = self.first_instant(condition, prefilter, extra)
        return f'label_replace({found}, "{RULE_LABEL}", {quote(rule.code)}, "", "")'

    # ---------------------------------------------------------------------- freshness

    def seen(self, vanished: bool) -> str:
        """Per GPU and scrape target: its latest sample's time; with `vanished`, a GPU with
        samples in the window but none now is tagged gone (its last sample's time is the
        second round's)."""
        metric = [self.dialect.pod_metric()]
        # The node label may be the target's own `instance` (nvidia_gpu_exporter).
        by = tuple(dict.fromkeys((*self.identity, *TARGET_LABELS)))
        latest = aggregate("max", by, self.each(metric, lambda s: f"timestamp({s})"))
        if not vanished:
            return latest
        window = aggregate("group", by, self.each(metric, lambda s: f"last_over_time({s}"
                                                                    f"[{self.w}])"))
        now = self.each(metric, lambda s: s)
        return (f"{latest} or label_replace({window} unless {self.on} {now}, "
                f'"{STAT_LABEL}", "gone", "", "")')

    def last_seen(self) -> str:
        """Per GPU gone from its exporter: the time of its last sample in the window."""
        metric = [self.dialect.pod_metric()]
        by = tuple(dict.fromkeys((*self.identity, *TARGET_LABELS)))
        stamps = self.each(metric, lambda s: f"timestamp({s})")
        return aggregate("max", by, f"max_over_time({stamps}{self.subquery})")

    def targets(self, vanished: bool) -> str:
        """The scrape targets of the GPUs (seen in the window, with `vanished`): `up` now,
        and how many scrapes the window holds (which gives the scrape interval)."""
        by = ", ".join(TARGET_LABELS)
        series = (lambda s: f"last_over_time({s}[{self.w}])") if vanished else (lambda s: s)
        gpus = aggregate("group", TARGET_LABELS,
                         self.each([self.dialect.pod_metric()], series))
        up = f"max by ({by}) (up)"
        samples = f"max by ({by}) (count_over_time(up[{self.w}]))"
        tagged = (f'label_replace({up}, "{STAT_LABEL}", "up", "", "") or '
                  f'label_replace({samples}, "{STAT_LABEL}", "samples", "", "")')
        return f"({tagged}) and on ({by}) {gpus}"
