"""Turn one dialect's health answers into a verdict per GPU, by the rule table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.dialects.model import Dialect
from app.health.queries import (
    RULE_LABEL,
    STAT_LABEL,
    TARGET_LABELS,
    Candidates,
    HealthWindow,
    followup_queries,
    rule_groups,
)
from app.health.rules import (
    DEFAULT_SCRAPE_INTERVAL_S,
    EXPORTER_DOWN,
    NO_SIGNALS,
    RULES,
    SEVERITY_RANK,
    STALE,
    STALE_INTERVALS,
    XID_COUNT_LABEL,
    xid_class,
)
from app.prometheus.client import QueryResult
from app.services.gpu_rows import GpuRows
from app.services.labels import GpuKey, GpuLabelReader, Labels
from app.services.queries import QueryKey
from app.services.records import Gpu, GpuFilters, GpuHealth, HealthReason
from app.services.samples import number, reading_samples

_RULES = {rule.code: rule for rule in RULES}
Target = tuple[str, str]


class HealthJoin:
    """Collects one dialect's health answers, then gives each GPU row its verdict."""

    def __init__(self, dialect: Dialect, window: HealthWindow) -> None:
        self.dialect = dialect
        self.window = window
        self.reader = GpuLabelReader(dialect)
        self.reasons: dict[GpuKey, list[HealthReason]] = {}
        self.xid_since: dict[GpuKey, dict[int, float]] = {}
        self.xid_before: dict[GpuKey, set[int]] = {}
        # Per GPU: its latest sample's time, its target, and the labels it was seen with.
        self.seen: dict[GpuKey, tuple[float, Target, Labels]] = {}
        self.up: dict[Target, float] = {}
        self.scrapes: dict[Target, float] = {}
        # The first round's answer: which GPUs to ask the second round about, per signal.
        self.candidates: Candidates = {}
        # The first round asks once per group of rules reading the same metrics.
        self.groups = {group[0].code: [rule.code for rule in group]
                       for group in rule_groups(dialect.health_metrics)}
        # The instant the queries were evaluated at, as Prometheus answered it.
        self.now: float | None = None

    def add(self, key: QueryKey, result: QueryResult) -> None:
        """Take one health query's answer."""
        with reading_samples(f"health {key[-1]}"):
            for series in result.series:
                labels = series["metric"]
                at, raw = series["value"]
                self.now = float(at)
                value = number(raw)
                if value is not None:
                    self._take(key[-1], labels, value)

    def _take(self, kind: str, labels: Labels, value: float) -> None:
        if kind == "targets":
            target = _target(labels)
            book = self.up if labels.get(STAT_LABEL) == "up" else self.scrapes
            book[target] = value
            return
        gpu = self.reader.key(labels)
        if gpu is None:
            return
        if kind == "seen" and labels.get(STAT_LABEL) == "gone":
            self.candidates.setdefault("gone", set()).add(gpu)
        elif kind in ("seen", "seen_gone"):
            known = self.seen.get(gpu)
            if known is None or value > known[0]:
                self.seen[gpu] = (value, _target(labels), labels)
        elif kind in ("xid_gauge", "xid_count"):
            code = _code(labels)
            if code:  # 0: no XID since the driver loaded
                codes = self.xid_since.setdefault(gpu, {})
                codes[code] = min(value, codes.get(code, value))
        elif kind == "xid_before":
            code = _code(labels)
            if code is not None:
                self.xid_before.setdefault(gpu, set()).add(code)
        elif kind in ("xid_candidates", "xid_count_candidates"):
            self.candidates.setdefault(kind.removesuffix("_candidates"), set()).add(gpu)
        elif kind == "rule_candidates":
            for member in self.groups.get(labels.get(RULE_LABEL, ""), ()):
                self.candidates.setdefault(member, set()).add(gpu)
        elif kind == "rules":
            rule = _RULES.get(labels.get(RULE_LABEL, ""))
            if rule is not None:
                detail = ", ".join(f"{name} {labels[name]}" for name in rule.labels
                                   if labels.get(name))
                message = f"{rule.message} ({detail})" if detail else rule.message
                self._reason(gpu, HealthReason(rule.code, rule.severity, message,
                                               rule.action, value))

    def followups(self, filters: GpuFilters) -> dict[QueryKey, str]:
        """The second round's queries, for the first round's candidates (often none)."""
        if not self.candidates:
            return {}
        return followup_queries(self.dialect, filters, self.window, self.candidates)

    def _reason(self, gpu: GpuKey, reason: HealthReason) -> None:
        self.reasons.setdefault(gpu, []).append(reason)

    def judge(self, rows: dict[GpuKey, Gpu]) -> None:
        """Give every row its verdict; a device-wide answer (no MIG label) covers the
        device's row and every MIG instance of it, which often repeat it (counted once)."""
        self._xid_reasons()
        self._freshness_reasons()
        by_device: dict[tuple[str, str], list[GpuKey]] = {}
        for key in rows:
            by_device.setdefault(key[:2], []).append(key)
        found: dict[GpuKey, dict[tuple[str, str, float | None], HealthReason]] = {
            key: {} for key in rows}
        for key, reasons in self.reasons.items():
            targets = by_device.get(key[:2], []) if not key[2] else [key] if key in rows else []
            for target in targets:
                for reason in reasons:
                    found[target].setdefault((reason.code, reason.message, reason.since),
                                             reason)
        signals = bool(self.dialect.health_metrics)
        for key, row in rows.items():
            reasons = list(found[key].values())
            if not signals:
                reasons.append(HealthReason(
                    NO_SIGNALS, "unknown",
                    f"No health signal from this GPU's exporter ({self.dialect.name})",
                    "Run dcgm-exporter on the node: DCGM_FI_DEV_XID_ERRORS is in its default "
                    "counters; see /api/v1/capabilities for the others to enable"))
            row.health = verdict(reasons)

    def _xid_reasons(self) -> None:
        for gpu, codes in self.xid_since.items():
            before = self.xid_before.get(gpu, set())
            for code, since in codes.items():
                if code in before:
                    continue  # held before the window: an old event, not a new one
                xid = xid_class(code)
                self._reason(gpu, HealthReason(f"xid_{code}", xid.severity,
                                               f"XID {code}: {xid.meaning}", xid.action, since))

    def _freshness_reasons(self) -> None:
        now = self.now
        if now is None:
            return
        for gpu, (last, target, _) in self.seen.items():
            if target in self.up and self.up[target] == 0:
                instance, job = target
                self._reason(gpu, HealthReason(
                    EXPORTER_DOWN, "unknown",
                    f"The exporter's scrape target is down (up == 0: instance {instance}, "
                    f"job {job}); no sample since then",
                    "Check the exporter's pod on the node (logs, restarts); the GPU itself "
                    "may be fine", last))
                continue
            interval = self.scrape_interval(target)
            age = now - last
            if age > STALE_INTERVALS * interval:
                self._reason(gpu, HealthReason(
                    STALE, "unknown",
                    f"No sample for {age:.0f} s, more than {STALE_INTERVALS} scrape "
                    f"intervals ({interval:.0f} s)",
                    "Check the exporter: it no longer reports this GPU (a GPU that fell off "
                    "the bus vanishes from NVML)", last))

    def scrape_interval(self, target: Target) -> float:
        """The target's scrape interval, from how many scrapes the window holds."""
        scrapes = self.scrapes.get(target)
        if not scrapes or scrapes < 2:
            return DEFAULT_SCRAPE_INTERVAL_S
        return self.window.seconds / scrapes

    def vanished(self, rows: dict[GpuKey, Gpu]) -> dict[GpuKey, Gpu]:
        """Rows for GPUs seen in the window but not now: identity only, no values."""
        table = GpuRows(self.reader)
        for gpu, (_, _, labels) in self.seen.items():
            if gpu not in rows:
                table.get(labels)
        return table.rows


def verdict(reasons: Iterable[HealthReason]) -> GpuHealth:
    """The status of the worst reason (ok without any), reasons worst first, then oldest."""
    ordered = sorted(reasons, key=lambda r: (SEVERITY_RANK.get(r.severity, 9),
                                             r.since if r.since is not None else 0.0, r.code,
                                             r.message))
    return GpuHealth(status=ordered[0].severity if ordered else "ok", reasons=ordered)


def _target(labels: Labels) -> Target:
    instance, job = (labels.get(name, "") for name in TARGET_LABELS)
    return instance, job


def _code(labels: dict[str, Any]) -> int | None:
    try:
        return int(float(labels.get(XID_COUNT_LABEL, "")))
    except ValueError:
        return None
