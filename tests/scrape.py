"""Read our own /metrics with prometheus-client's parser: samples by name and labels."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by its name and label set."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample `name` with exactly `labels`, or None when there is none."""
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the `name` samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def label_values(samples: Samples, label: str) -> set[str]:
    """Every value `label` has in any sample."""
    return {v for (_, ls) in samples for k, v in ls if k == label}


def with_labels(samples: Samples, name: str) -> Mapping[frozenset[tuple[str, str]], float]:
    """The label sets and values of `name`."""
    return {ls: v for (n, ls), v in samples.items() if n == name}
