"""Plain records the services return and the schemas dump."""

from __future__ import annotations

from dataclasses import dataclass


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
    pod: str | None = None
    namespace: str | None = None
    container: str | None = None
    mig_profile: str | None = None
    mig_instance: int | None = None
    timestamp: float | None = None


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
