"""What an exporter dialect is: metric names, label spellings and unit conversions, as data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from app.prometheus.promql import check_label_name, check_metric_name

# The fields the API serves, in canonical units (bytes, percent 0-100, degrees C, watts).
GPU_FIELDS = (
    "utilization",
    "memory_used",
    "memory_total",
    "memory_free",
    "memory_reserved",
    "memory_utilization",
    "temperature",
    "power_usage",
)
PROCESS_FIELDS = ("gpu_memory", "cpu", "memory")
MIB = 1024 * 1024
# Read only to derive others (dcgm's total = used + free + reserved), never served.
DERIVED_ONLY_FIELDS = frozenset({"memory_reserved"})

# How Prometheus and Kubernetes label what they scrape, whatever the exporter: a scraped
# label that clashes with a target label is renamed exported_<name> (honor_labels false),
# and service discovery names the target's address `instance` and its pod `pod`.
EXPORTED_PREFIX = "exported_"
TARGET_ADDRESS_LABEL = "instance"


@dataclass(frozen=True)
class Source:
    """One metric that gives a field: multiply by `scale` to reach the canonical unit.

    Exporters repeat a GPU's series once per pod on a time-shared GPU. Device gauges are
    copied whole to every pod's series, so a GPU's value is the max over its series.
    `per_pod` marks a metric that may also come split per pod (dcgm-exporter 4.8+ writes
    one pod-less series with the device's value and one per pod with that pod's own share):
    the GPU's value is then its pod-less series where one exists, else the max over the
    copies, and its pod series say which workloads hold the GPU and what each one uses.
    `skip_on_mig` drops the metric on MIG instances, where it is absent or a misleading 0.
    A field's later sources are read only for GPUs the earlier ones say nothing about.
    """

    metric: str
    scale: float = 1.0
    per_pod: bool = False
    skip_on_mig: bool = False

    def __post_init__(self) -> None:
        check_metric_name(self.metric)
        if not self.scale > 0:
            raise ValueError(f"scale of {self.metric} must be positive")


@dataclass(frozen=True)
class PodHalf:
    """One spelling of the workload labels: exported_* (honorLabels false) or plain."""

    pod: tuple[str, ...]
    namespace: tuple[str, ...]
    exported: bool


@dataclass(frozen=True)
class GpuLabels:
    """Candidate label names for each GPU attribute, in order of preference."""

    node: tuple[str, ...]
    index: tuple[str, ...] = ()
    name: tuple[str, ...] = ()
    uuid: tuple[str, ...] = ()
    mig_instance: tuple[str, ...] = ()
    mig_profile: tuple[str, ...] = ()
    # The workload holding a GPU, in order of preference (exported_* first: see above).
    pod: tuple[str, ...] = ()
    namespace: tuple[str, ...] = ()
    container: tuple[str, ...] = ()
    # The scrape target's own pod: a series whose pod is its target's names no workload.
    target_pod: tuple[str, ...] = ("pod",)

    def __post_init__(self) -> None:
        for names in self.__dict__.values():
            for name in names:
                check_label_name(name)
        if not self.index and not self.uuid:
            raise ValueError("a dialect needs an index or a uuid label to tell GPUs apart")

    def pod_halves(self) -> list[PodHalf]:
        """The workload labels as Prometheus stores them: exported_* ones, then plain ones."""
        halves = []
        for exported in (True, False):
            pod = tuple(n for n in self.pod if n.startswith(EXPORTED_PREFIX) == exported)
            if pod:
                namespace = tuple(n for n in self.namespace
                                  if n.startswith(EXPORTED_PREFIX) == exported)
                halves.append(PodHalf(pod, namespace, exported))
        return halves

    def identity(self) -> tuple[str, ...]:
        """Labels that tell one GPU (or MIG instance) from another, and describe it."""
        return _unique(
            self.node + self.index + self.uuid + self.mig_instance + self.mig_profile + self.name
        )

    def pods(self) -> tuple[str, ...]:
        """Labels that name the Kubernetes workload holding a GPU."""
        return _unique(self.pod + self.namespace + self.container)


@dataclass(frozen=True)
class ProcessLabels:
    """Candidate label names for process attributes."""

    pid: tuple[str, ...] = ("pid",)
    process_name: tuple[str, ...] = ("process_name",)
    user: tuple[str, ...] = ("user",)
    command: tuple[str, ...] = ("command",)

    def __post_init__(self) -> None:
        for names in self.__dict__.values():
            for name in names:
                check_label_name(name)

    def all(self) -> tuple[str, ...]:
        """Every process label, in a stable order."""
        return _unique(self.pid + self.process_name + self.user + self.command)


@dataclass(frozen=True)
class Dialect:
    """Everything needed to read one exporter's GPU and process series."""

    name: str
    description: str
    labels: GpuLabels
    gpu_fields: Mapping[str, tuple[Source, ...]]
    process_labels: ProcessLabels = field(default_factory=ProcessLabels)
    process_fields: Mapping[str, tuple[Source, ...]] = field(default_factory=dict)
    # Series read only for their labels (e.g. nvidia_smi_gpu_info carries name and index).
    gpu_info_metrics: tuple[str, ...] = ()
    # Gauges whose value is the GPU's index, where no label carries it.
    index_metrics: tuple[str, ...] = ()
    process_info_metrics: tuple[str, ...] = ()
    # GPU attributes ("index", "name") found only on the info metrics, not on every series.
    info_only_attributes: tuple[str, ...] = ()
    # UUIDs in this exporter lack NVIDIA's "GPU-" prefix (nvidia_gpu_exporter).
    uuid_without_prefix: bool = False
    # A MIG device's index reads "<gpu>:<instance>" (nvitop-exporter).
    index_encodes_mig: bool = False
    # A MIG device's name reads "<model> MIG <profile>" (nvitop-exporter).
    name_encodes_mig_profile: bool = False
    # No process name label: the command's executable stands in (nvitop-exporter).
    process_name_from_command: bool = False
    # Set by detection when the node label holds the exporter's own pod name and only this
    # metric (kube-state-metrics' kube_pod_info{pod, node}) says which node that pod is on.
    node_map_metric: str | None = None
    # Health signals it may publish (app/health/rules.py); detection keeps those found.
    health_metrics: tuple[str, ...] = ()
    # A counter of the energy a GPU used, scaled to joules (dcgm's is in mJ since the
    # driver loaded); without one, energy is the integral of power.
    energy_source: Source | None = None

    def __post_init__(self) -> None:
        for fields, allowed in ((self.gpu_fields, GPU_FIELDS),
                                (self.process_fields, PROCESS_FIELDS)):
            unknown = set(fields) - set(allowed)
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}; known: {list(allowed)}")
            for name, sources in fields.items():
                if not sources:
                    raise ValueError(f"field {name} lists no metric")
        for metric in (self.gpu_info_metrics + self.index_metrics + self.process_info_metrics
                       + self.health_metrics):
            check_metric_name(metric)
        if not self.gpu_fields:
            raise ValueError("a dialect needs at least one GPU metric")

    def pod_metric(self) -> str:
        """The metric whose pod labels say which workloads hold a GPU."""
        return self.pod_source().metric

    def reads_pods(self, source: Source) -> bool:
        """Tell whether `source`'s series are read per pod: those marked `per_pod`, and
        the pod source, whose pod series name the workloads holding each GPU."""
        return bool(self.labels.pod) and (source.per_pod or source == self.pod_source())

    def pod_source(self) -> Source:
        """The source whose per-pod series name the workloads (memory used, by preference)."""
        for name in ("memory_used", *self.gpu_fields):
            for source in self.gpu_fields.get(name, ()):
                if source.per_pod:
                    return source
        sources = self.gpu_fields.get("memory_used") or next(iter(self.gpu_fields.values()))
        return sources[0]

    def gpu_metric_names(self) -> tuple[str, ...]:
        """Every metric this dialect reads for GPUs."""
        return _unique(
            tuple(s.metric for sources in self.gpu_fields.values() for s in sources)
            + self.gpu_info_metrics
            + self.index_metrics
        )

    def process_metric_names(self) -> tuple[str, ...]:
        """Every metric this dialect reads for processes."""
        return _unique(
            tuple(s.metric for sources in self.process_fields.values() for s in sources)
            + self.process_info_metrics
        )


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))
