"""Plain records the services return and the schemas dump."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuFilters:
    """Which GPUs (and their processes) a caller asked for; empty means all."""

    node: tuple[str, ...] = ()
    namespace: tuple[str, ...] = ()
    pod: tuple[str, ...] = ()
    gpu_name: tuple[str, ...] = ()
    uuid: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """Tell whether no filter is set."""
        return not (self.node or self.namespace or self.pod or self.gpu_name or self.uuid)

    def matches(self, gpu: Gpu) -> bool:
        """Tell whether a joined GPU row is one the caller asked for.

        This is the definition; the label matchers pushed into PromQL only narrow the data.
        """
        if self.node and gpu.node_name not in self.node:
            return False
        if self.gpu_name and gpu.gpu_name not in self.gpu_name:
            return False
        if self.uuid and (gpu.uuid or "").lower() not in {u.lower() for u in self.uuid}:
            return False
        if self.pod or self.namespace:
            return any(self.matches_workload(p.pod, p.namespace) for p in gpu.pods)
        return True

    def matches_workload(self, pod: str | None, namespace: str | None) -> bool:
        """Tell whether a workload (a GPU's pod, or a process's) is one asked for."""
        if self.pod and pod not in self.pod:
            return False
        return not (self.namespace and namespace not in self.namespace)


@dataclass(frozen=True)
class SnapshotQuery:
    """Which GPUs a caller asked for, and the Unix time to read them at (None: now)."""

    filters: GpuFilters
    at: float | None = None


@dataclass(frozen=True)
class HealthQuery:
    """A GPU health request: the filters, the instant (None: now), the event window (s)."""

    filters: GpuFilters
    at: float | None = None
    window: float = 3600.0


@dataclass(frozen=True)
class HistoryQuery:
    """A history request, normalized: the aligned window, its step, what and how to group.

    `start` and `end` are multiples of `step` (seconds) and both are timestamps of the
    answer; equal queries are one cache entry, however their bounds were spelt.
    """

    start: float
    end: float
    step: float
    fields: tuple[str, ...]
    group_by: str = "gpu"
    agg: str = "avg"
    filters: GpuFilters = GpuFilters()

    @property
    def points(self) -> int:
        """How many timestamps the window holds, both ends included."""
        return round((self.end - self.start) / self.step) + 1

    def timestamps(self) -> list[float]:
        """Every evaluation instant, from start to end."""
        return [self.start + i * self.step for i in range(self.points)]


@dataclass(slots=True)
class PodShare:
    """A workload holding a GPU, with what it uses of it where the exporter says so.

    `utilization` (%) and `memory_used` (bytes) are the pod's own share, or None where the
    exporter only copies the device's values onto the pod's series.
    """

    pod: str
    namespace: str | None = None
    container: str | None = None
    utilization: float | None = None
    memory_used: int | None = None

    def sort_key(self) -> tuple[str, str, str]:
        """Order pods by namespace, pod, container."""
        return (self.namespace or "", self.pod, self.container or "")


@dataclass(frozen=True, slots=True)
class HealthReason:
    """One reason a GPU is not ok: a rule that fired, what it means and what to do.

    `since` is the first instant of the window the rule held (for an exporter that stopped,
    the time of the GPU's last sample); None when not known.
    """

    code: str
    severity: str
    message: str
    action: str
    since: float | None = None


@dataclass(slots=True)
class GpuHealth:
    """A GPU's verdict: ok, warning, critical or unknown, with its reasons worst first."""

    status: str = "ok"
    reasons: list[HealthReason] = field(default_factory=list)


@dataclass(slots=True)
class GpuWindow:
    """One GPU's figures over a fleet window: average utilization (%), seconds below the
    idle threshold, and its energy (J; a MIG instance has its share of the device's)."""

    utilization_avg: float | None = None
    idle_seconds: float | None = None
    energy_joules: float | None = None


@dataclass(slots=True)
class Gpu:
    """One GPU, or one MIG instance of a GPU, in canonical units; None = not reported."""

    node_name: str
    gpu_index: int | None = None
    gpu_name: str | None = None
    uuid: str | None = None
    utilization: float | None = None
    memory_used: int | None = None
    memory_total: int | None = None
    memory_free: int | None = None
    memory_utilization: float | None = None
    temperature: float | None = None
    power_usage: float | None = None
    pods: list[PodShare] = field(default_factory=list)
    mig_profile: str | None = None
    mig_instance: int | None = None
    timestamp: float | None = None
    health: GpuHealth | None = None
    # allocated-busy, allocated-idle, free, unallocated-busy or unknown (see app/services/
    # idle.py); idle_seconds: how long utilization has stayed below the idle threshold.
    state: str | None = None
    idle_seconds: float | None = None
    # The window figures of the fleet view (not part of the GPU list).
    window: GpuWindow | None = None

    # The original frontend's view of `pods`: each attribute comma-joined, None when empty.
    @property
    def pod(self) -> str | None:
        """The pods holding the GPU, comma-separated."""
        return _joined(self.pods, "pod")

    @property
    def namespace(self) -> str | None:
        """Their namespaces, comma-separated, each once."""
        return _joined(self.pods, "namespace")

    @property
    def container(self) -> str | None:
        """Their containers, comma-separated, each once."""
        return _joined(self.pods, "container")


def _joined(pods: list[PodShare], attribute: str) -> str | None:
    # Read for every row of every list: one pod, the common case, takes no join.
    if len(pods) < 2:
        return getattr(pods[0], attribute) if pods else None
    return ",".join(dict.fromkeys(v for p in pods if (v := getattr(p, attribute)))) or None


@dataclass(slots=True)
class GpuProcess:
    """One process holding GPU memory."""

    node_name: str
    gpu_index: int | None
    pid: int
    process_name: str | None = None
    user: str | None = None
    command: str | None = None
    gpu_memory: int | None = None
    cpu: float | None = None
    memory: float | None = None
    gpu_uuid: str | None = None
    pod: str | None = None
    namespace: str | None = None
    timestamp: float | None = None


@dataclass(slots=True)
class HistorySeries:
    """One chart line: what it is (`key`) and each field's value at every timestamp."""

    key: dict[str, str | int | None]
    values: dict[str, list[float | int | None]]


@dataclass(slots=True)
class History:
    """The answer of a history query: shared timestamps, one series per GPU or group."""

    query: HistoryQuery
    series: list[HistorySeries]


@dataclass(frozen=True)
class UpstreamStatus:
    """How Prometheus answered the health probe."""

    url: str
    latency_ms: float


@dataclass(frozen=True)
class HealthReport:
    """The answer of a health check that succeeded."""

    status: str
    timestamp: float
    version: str
    prometheus: UpstreamStatus
