"""Simulate a deterministic GPU cluster: the ground truth behind every demo exporter.

`snapshot(spec, step)` is a pure function: the same spec and step always give the same
rows, so a test can compare what Prometheus stored with what the exporter published.
Canonical units: bytes (whole MiB multiples), percent 0-100, degrees Celsius, watts.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable

MIB = 1 << 20
# The nominal wall time one step stands for; it only ages processes (running_time_s).
STEP_SECONDS = 15.0
# Upper bound that keeps generated pids unique per node (see _pid).
MAX_PROCESSES_PER_GPU = 50


@dataclasses.dataclass(frozen=True, slots=True)
class SimProcess:
    """One compute process on a GPU, as nvidia-smi / NVML would list it."""

    pid: int
    process_name: str
    user: str
    uid: int
    command: str
    gpu_memory_bytes: int
    cpu_percent: float
    memory_percent: float
    running_time_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class SimPod:
    """The Kubernetes container a GPU (or a share of it) is allocated to."""

    pod: str
    namespace: str
    container: str


# What the simulator can break on a GPU (see Fault), and the dcgm-exporter signal of each.
FAULT_KINDS = (
    "xid",                # DCGM_FI_DEV_XID_ERRORS takes `value` (the code) and keeps it
    "ecc_dbe",            # DCGM_FI_DEV_ECC_DBE_VOL_TOTAL rises by `value` (1) a step
    "ecc_sbe",            # DCGM_FI_DEV_ECC_SBE_VOL_TOTAL rises by `value` (1) a step
    "row_remap_failure",  # DCGM_FI_DEV_ROW_REMAP_FAILURE is 1
    "uncorrectable_remap",  # DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS rises by `value` a step
    "row_remap_pending",  # DCGM_FI_DEV_ROW_REMAP_PENDING is 1
    "throttle",           # DCGM_FI_DEV_CLOCKS_EVENT_REASONS has the bits of `value` set
    "pcie_replay",        # DCGM_FI_DEV_PCIE_REPLAY_COUNTER rises by `value` a step
    "nvlink_crc",         # DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL rises by `value`
    "dcgm_health",        # DCGM_EXP_GPU_HEALTH_STATUS{health_watch=`watch`} is `value`
)
# Steps an XID stays in dcgm-exporter's DCGM_EXP_XID_ERRORS_COUNT (its 5-minute window).
XID_COUNT_STEPS = 10
# NVML clock event reasons of a healthy GPU: idle, and the software power cap when busy.
IDLE_BIT, POWER_CAP_BIT = 0x1, 0x4
POWER_CAP_UTILIZATION = 90.0

# What a GPU does in the fleet scenario:
FLEET_ROLES = (
    "busy",       # a pod holds it and works
    "held-idle",  # a pod holds it and does nothing (the waste the fleet view finds)
    "cycling",    # a pod holds it; its job runs for CYCLE_STEPS / 2, then pauses as long
    "outside",    # busy, but no pod: a process started outside Kubernetes
    "free",       # nobody holds it, nothing runs
)
CYCLE_STEPS = 300
# The driver reloads (the energy counter restarts from 0) every this many steps, at a
# phase of each GPU's own.
DRIVER_RELOAD_STEPS = 960


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """A fault on one GPU (all its MIG instances) from `start_step` until `end_step`
    (excluded; None: for good). An XID stays in the gauge after it ends, as the real
    gauge never resets; counters keep what they counted."""

    node: str
    gpu: int
    kind: str
    start_step: int = 0
    end_step: int | None = None
    value: int = 1
    watch: str = "MEM"

    def __post_init__(self) -> None:
        """Reject faults the model cannot show."""
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {FAULT_KINDS}")
        if self.start_step < 0 or (self.end_step is not None
                                   and self.end_step <= self.start_step):
            raise ValueError("a fault needs 0 <= start_step < end_step")

    def active(self, step: int) -> bool:
        """Tell whether the fault is on at `step`."""
        return self.start_step <= step and (self.end_step is None or step < self.end_step)

    def steps_counted(self, step: int) -> int:
        """How many steps of the fault have passed by `step` (for counters)."""
        if step < self.start_step:
            return 0
        last = step if self.end_step is None else min(step, self.end_step - 1)
        return last - self.start_step + 1


def parse_fault(text: str, start_step: int) -> Fault:
    """Read `node:gpu:kind[:value]` (e.g. gpu-node-001:1:xid:79) as a fault from a step."""
    parts = text.split(":")
    if len(parts) not in (3, 4) or not parts[1].isdigit():
        raise ValueError(f"fault {text!r}: expected node:gpu:kind[:value], e.g. "
                         "gpu-node-001:1:xid:79")
    value = int(parts[3], 0) if len(parts) == 4 else 1
    return Fault(parts[0], int(parts[1]), parts[2], start_step, value=value)


@dataclasses.dataclass(frozen=True, slots=True)
class SimHealth:
    """A GPU's health signals at one step, as dcgm-exporter would read them from DCGM."""

    xid: int = 0
    xid_counts: tuple[tuple[int, int], ...] = ()
    ecc_sbe_total: int = 0
    ecc_dbe_total: int = 0
    row_remap_failure: int = 0
    uncorrectable_remapped_rows: int = 0
    row_remap_pending: int = 0
    clock_event_reasons: int = 0
    pcie_replay: int = 0
    nvlink_crc_flit: int = 0
    health_status: tuple[tuple[str, int], ...] = ()


_COUNTERS = {"ecc_dbe": "ecc_dbe_total", "ecc_sbe": "ecc_sbe_total",
             "uncorrectable_remap": "uncorrectable_remapped_rows",
             "pcie_replay": "pcie_replay", "nvlink_crc": "nvlink_crc_flit"}
_LEVELS = {"row_remap_failure": "row_remap_failure", "row_remap_pending": "row_remap_pending"}


def gpu_health(faults: tuple[Fault, ...], node: str, index: int, step: int,
               utilization: float) -> SimHealth:
    """The health signals of GPU `index` on `node` at `step`, from the faults on it."""
    bits = IDLE_BIT if utilization == 0 else POWER_CAP_BIT \
        if utilization >= POWER_CAP_UTILIZATION else 0
    values: dict[str, int] = {}
    xid, xid_started = 0, -1
    counts: dict[int, int] = {}
    status: dict[str, int] = {}
    for fault in faults:
        if fault.node != node or fault.gpu != index or step < fault.start_step:
            continue
        if fault.kind == "xid":
            if fault.start_step >= xid_started:  # the gauge holds the latest code
                xid, xid_started = fault.value, fault.start_step
            if step < fault.start_step + XID_COUNT_STEPS:
                counts[fault.value] = counts.get(fault.value, 0) + 1
        elif fault.kind in _COUNTERS:
            name = _COUNTERS[fault.kind]
            values[name] = values.get(name, 0) + fault.value * fault.steps_counted(step)
        elif not fault.active(step):
            continue
        elif fault.kind in _LEVELS:
            values[_LEVELS[fault.kind]] = 1
        elif fault.kind == "throttle":
            bits |= fault.value
        elif fault.kind == "dcgm_health":
            status[fault.watch] = max(status.get(fault.watch, 0), fault.value)
    return SimHealth(xid=xid, xid_counts=tuple(sorted(counts.items())),
                     clock_event_reasons=bits, health_status=tuple(sorted(status.items())),
                     **values)


@dataclasses.dataclass(frozen=True, slots=True)
class SimGpu:
    """One GPU, or one MIG instance of a GPU, at one step.

    A MIG instance keeps its parent's `index`, `uuid`, `name`, temperature and power
    (device-level sensors) and has its own memory and utilization.
    `util_shares` / `memory_shares` are aligned with `pods` and sum exactly to
    `utilization` / `memory_used_bytes`; both are empty on an idle GPU.
    `host_cpu_percent` / `host_memory_percent` describe the node, not the GPU.
    """

    node: str
    index: int
    uuid: str
    name: str
    pci_bus_id: str
    driver_version: str
    utilization: float
    memory_copy_utilization: float
    memory_total_bytes: int
    memory_used_bytes: int
    memory_reserved_bytes: int
    memory_free_bytes: int
    temperature: float
    power_w: float
    sm_clock_mhz: float
    mig_instance: int | None
    mig_profile: str | None
    pods: tuple[SimPod, ...]
    util_shares: tuple[float, ...]
    memory_shares: tuple[int, ...]
    processes: tuple[SimProcess, ...]
    host_cpu_percent: float
    host_memory_percent: float
    health: SimHealth = SimHealth()
    # dcgm-exporter's DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ since the driver loaded; the
    # device's, repeated on its MIG instances); None outside the fleet scenario.
    energy_mj: float | None = None
    # Why the GPU looks as it does in the fleet scenario (see FLEET_ROLES); "" outside it.
    role: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class SimNode:
    """Node-level data (host CPU and RAM use) that some exporters publish."""

    name: str
    cpu_percent: float
    memory_percent: float


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Shape of the simulated cluster; every field takes part in the determinism."""

    nodes: int = 3
    gpus_per_node: int = 8
    seed: int = 0
    idle_fraction: float = 0.25
    processes_per_busy_gpu: int = 2
    mig_nodes: int = 0
    shared_gpus: int = 0
    node_prefix: str = "gpu-node-"
    faults: tuple[Fault, ...] = ()
    # The fleet scenario (issue: allocation against use): pods that hold idle GPUs, jobs
    # that end and start again, work outside Kubernetes, a node nobody requested, pending
    # pods, the energy counter and kube-state-metrics' allocation series. Off by default so
    # that every other world keeps its shape.
    fleet: bool = False

    def __post_init__(self) -> None:
        """Reject shapes the model cannot build."""
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError("nodes and gpus_per_node must be at least 1")
        if not 0.0 <= self.idle_fraction <= 1.0:
            raise ValueError("idle_fraction must be between 0 and 1")
        if not 0 <= self.processes_per_busy_gpu <= MAX_PROCESSES_PER_GPU:
            raise ValueError(f"processes_per_busy_gpu must be 0..{MAX_PROCESSES_PER_GPU}")
        if not 0 <= self.mig_nodes <= self.nodes:
            raise ValueError("mig_nodes must be between 0 and nodes")
        plain_gpus = (self.nodes - self.mig_nodes) * self.gpus_per_node
        if not 0 <= self.shared_gpus <= plain_gpus:
            raise ValueError(f"shared_gpus must be between 0 and {plain_gpus} (non-MIG GPUs)")
        nodes = set(node_names(self))
        for fault in self.faults:
            if fault.node not in nodes or not 0 <= fault.gpu < self.gpus_per_node:
                raise ValueError(f"fault on {fault.node} GPU {fault.gpu}: no such GPU")


@dataclasses.dataclass(frozen=True, slots=True)
class _Model:
    name: str
    memory_mib: int
    reserved_mib: int
    idle_power_w: float
    max_power_w: float
    max_sm_clock_mhz: int


_A100 = _Model("NVIDIA A100-SXM4-80GB", 81920, 512, 62.0, 400.0, 1410)
_H100 = _Model("NVIDIA H100 80GB HBM3", 81559, 479, 72.0, 700.0, 1980)
_L40S = _Model("NVIDIA L40S", 46068, 491, 36.0, 350.0, 2520)
_T4 = _Model("Tesla T4", 15360, 255, 10.0, 70.0, 1590)
_MODELS = (_A100, _H100, _L40S, _T4)
_MIG_MODELS = (_A100, _H100)
# (GPU instance id, profile, compute slices of 7, memory slices of 8): a common A100/H100
# layout that uses every memory slice, so the instances' totals add up to the device.
_MIG_LAYOUT = (
    (2, "3g.40gb", 3, 4),
    (3, "2g.20gb", 2, 2),
    (9, "1g.10gb", 1, 1),
    (10, "1g.10gb", 1, 1),
)
_DRIVERS = ("535.161.08", "550.90.07", "560.35.03")
# PCI buses of an 8-GPU HGX baseboard; larger nodes continue past them.
_PCI_BUSES = (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD)
_IDLE_SM_CLOCK_MHZ = 210.0

_USERS = (("alice", 1001), ("bob", 1002), ("carol", 1003), ("dmitri", 1004), ("svc-train", 2001))
_NAMESPACES = ("ml-research", "team-vision", "inference", "llm-platform")
# (workload, container, process name, command); two commands carry quotes and a backslash
# because real command lines do, and label escaping must survive them.
_WORKLOADS = (
    ("resnet-train", "trainer", "python", "python train.py --model resnet50 --epochs 90"),
    ("bert-finetune", "worker", "python3", "python3 -m torch.distributed.run finetune.py"),
    ("llm-serve", "vllm", "python3", "python3 -m vllm.entrypoints.openai.api_server --tp 1"),
    ("triton", "server", "tritonserver", "tritonserver --model-repository=/models"),
    ("notebook", "jupyter", "python", 'python -c "import torch; torch.cuda.init()"'),
    ("etl", "spark", "java", 'java -cp "C:\\jobs\\etl.jar" Main'),
)

_STATIC, _DYNAMIC, _HOST = 1, 2, 3


def node_name(spec: ClusterSpec, node_index: int) -> str:
    """Return the name of node `node_index` (0-based), e.g. gpu-node-001."""
    return f"{spec.node_prefix}{node_index + 1:03d}"


def node_names(spec: ClusterSpec) -> list[str]:
    """Return every node name in order."""
    return [node_name(spec, n) for n in range(spec.nodes)]


def mig_node_names(spec: ClusterSpec) -> list[str]:
    """Return the nodes whose GPUs are split into MIG instances (the last `mig_nodes`)."""
    return [node_name(spec, n) for n in range(spec.nodes - spec.mig_nodes, spec.nodes)]


def shared_gpu_slots(spec: ClusterSpec) -> list[tuple[str, int]]:
    """Return (node, gpu index) of every time-sliced GPU, spread one per node first."""
    plain = spec.nodes - spec.mig_nodes
    return [(node_name(spec, k % plain), k // plain) for k in range(spec.shared_gpus)]


def current_step(period_s: float) -> int:
    """Return the wall-clock step for a period; a period of 0 freezes the cluster at 0."""
    if period_s <= 0:
        return 0
    return int(time.time() // period_s)


def node_stats(snapshot: list[SimGpu]) -> list[SimNode]:
    """Return the node-level data carried by a snapshot, one entry per node."""
    seen: dict[str, SimNode] = {}
    for gpu in snapshot:
        if gpu.node not in seen:
            seen[gpu.node] = SimNode(gpu.node, gpu.host_cpu_percent, gpu.host_memory_percent)
    return list(seen.values())


def snapshot(spec: ClusterSpec, step: int) -> list[SimGpu]:
    """Return every GPU row of the cluster at `step`, ordered by node, index, MIG instance."""
    if step < 0:
        raise ValueError("step must not be negative")
    shared = set(shared_gpu_slots(spec))
    first_mig = spec.nodes - spec.mig_nodes
    rows: list[SimGpu] = []
    for n in range(spec.nodes):
        rows.extend(_node_rows(spec, n, step, n >= first_mig, shared))
    return rows


def _key(spec: ClusterSpec, purpose: int, node: int, gpu: int = 0, step: int = 0) -> int:
    # Bit-pack instead of hashing: distinct inputs give distinct seeds, and Random(int)
    # is several times faster to build than anything derived from hashlib. The widths
    # (2^24 nodes, 2^12 GPUs a node, 2^48 steps) are far beyond any simulated cluster.
    key = spec.seed % (1 << 32)
    key = (key << 24) | node
    key = (key << 12) | gpu
    key = (key << 2) | purpose
    return (key << 48) | step


def _node_rows(
    spec: ClusterSpec, n: int, step: int, is_mig: bool, shared: set[tuple[str, int]]
) -> list[SimGpu]:
    node = node_name(spec, n)
    models = _MIG_MODELS if is_mig else _MODELS
    model = models[(n + spec.seed) % len(models)]
    driver = _DRIVERS[(n + spec.seed) % len(_DRIVERS)]
    host = random.Random(_key(spec, _HOST, n, step=step))
    host_cpu = round(host.uniform(8.0, 85.0), 1)
    host_mem = round(host.uniform(20.0, 80.0), 1)
    rows: list[SimGpu] = []
    for g in range(spec.gpus_per_node):
        static = random.Random(_key(spec, _STATIC, n, g))
        dynamic = random.Random(_key(spec, _DYNAMIC, n, g, step))
        device = _Device(
            node=node,
            index=g,
            uuid=_uuid(static),
            model=model,
            pci_bus_id=_pci_bus_id(g),
            driver_version=driver,
            host_cpu_percent=host_cpu,
            host_memory_percent=host_mem,
        )
        if is_mig:
            rows.extend(_mig_rows(spec, device, static, dynamic, step, n))
        else:
            rows.append(_plain_row(spec, device, static, dynamic, step, (node, g) in shared, n))
    return rows


@dataclasses.dataclass(frozen=True, slots=True)
class _Device:
    """What every row cut from one physical GPU has in common."""

    node: str
    index: int
    uuid: str
    model: _Model
    pci_bus_id: str
    driver_version: str
    host_cpu_percent: float
    host_memory_percent: float


@dataclasses.dataclass(frozen=True, slots=True)
class _Workload:
    base_utilization: float  # the job's mean utilization (its energy's mean power)
    utilization: int
    memory_copy_utilization: int
    used_mib: int
    pods: tuple[SimPod, ...]
    util_shares: tuple[float, ...]
    memory_shares: tuple[int, ...]
    processes: tuple[SimProcess, ...]


def _plain_row(
    spec: ClusterSpec,
    device: _Device,
    static: random.Random,
    dynamic: random.Random,
    step: int,
    is_shared: bool,
    n: int = 0,
) -> SimGpu:
    model = device.model
    pod_count = 2 + int(2 * static.random()) if is_shared else 1
    busy = is_shared or static.random() >= spec.idle_fraction
    usable = model.memory_mib - model.reserved_mib
    role = fleet_role(spec, n, device.index, busy, is_shared)
    # A role that ever runs a job draws the job's static values, so they never change.
    drawn = busy or role in ("held-idle", "cycling")
    work = _workload(spec, static, dynamic, step, drawn, pod_count, usable, device.index)
    working = _working(spec, role, busy, n, device.index, step)
    work = _as_role(work, role, working)
    temperature, power, clock, efficiency = _sensors(model, static, dynamic, work.utilization)
    health = gpu_health(spec.faults, device.node, device.index, step, work.utilization)
    energy = None
    if spec.fleet:
        span = model.max_power_w - model.idle_power_w
        busy_power = model.idle_power_w + span * work.base_utilization / 100 * efficiency
        energy = energy_mj(spec, n, device.index, step, model.idle_power_w, busy_power,
                           lambda a, b: _busy_steps(spec, role, busy, n, device.index, a, b))
    return _row(device, work, model.memory_mib, model.reserved_mib, temperature, power, clock,
                health=health, energy_mj=energy, role=role)


def _mig_rows(
    spec: ClusterSpec, device: _Device, static: random.Random, dynamic: random.Random,
    step: int, n: int = 0,
) -> list[SimGpu]:
    model = device.model
    works: list[_Workload] = []
    roles: list[str] = []
    for i, (_, _, _, memory_slices) in enumerate(_MIG_LAYOUT):
        usable = (model.memory_mib - model.reserved_mib) * memory_slices // 8
        busy = static.random() >= spec.idle_fraction
        ordinal = device.index * len(_MIG_LAYOUT) + i
        role = fleet_instance_role(spec, n, ordinal, busy)
        work = _workload(spec, static, dynamic, step, busy or role == "held-idle", 1, usable,
                         ordinal)
        works.append(_as_role(work, role, busy))
        roles.append(role)
    # Temperature and power belong to the device: drive them by the compute-weighted load.
    slices = sum(layout[2] for layout in _MIG_LAYOUT)
    weighted = sum(w.utilization * layout[2] for w, layout in zip(works, _MIG_LAYOUT, strict=True))
    device_util = round(weighted / slices)
    temperature, power, clock, efficiency = _sensors(model, static, dynamic, device_util)
    health = gpu_health(spec.faults, device.node, device.index, step, device_util)
    energy = None
    if spec.fleet:  # every instance keeps its role: the device's mean power is constant
        mean_util = sum(w.base_utilization * layout[2] for w, layout in
                        zip(works, _MIG_LAYOUT, strict=True) if w.utilization) / slices
        span = model.max_power_w - model.idle_power_w
        mean_power = model.idle_power_w + span * mean_util / 100 * efficiency
        energy = energy_mj(spec, n, device.index, step, mean_power, mean_power,
                           lambda a, b: 0)
    rows = []
    for work, role, (instance_id, profile, _, memory_slices) in zip(
            works, roles, _MIG_LAYOUT, strict=True):
        total = model.memory_mib * memory_slices // 8
        reserved = total - (model.memory_mib - model.reserved_mib) * memory_slices // 8
        mig = (instance_id, profile)
        rows.append(_row(device, work, total, reserved, temperature, power, clock, *mig,
                         health=health, energy_mj=energy, role=role))
    return rows


# ------------------------------------------------------------------- the fleet scenario

_FLEET = 0  # the purpose bits of the fleet scenario's own draws (see _key)


def unrequested_node(spec: ClusterSpec) -> str | None:
    """The node whose GPUs nobody requested in the fleet scenario: the last plain node."""
    plain = spec.nodes - spec.mig_nodes
    if not spec.fleet or plain < 2:
        return None
    return node_name(spec, plain - 1)


def _fleet_draws(spec: ClusterSpec, n: int, ordinal: int) -> tuple[float, int, int]:
    """A GPU's role draw, its job cycle's phase and its driver reload's phase."""
    draws = random.Random(_key(spec, _FLEET, n, ordinal))
    return (draws.random(), int(draws.random() * CYCLE_STEPS),
            int(draws.random() * DRIVER_RELOAD_STEPS))


def fleet_role(spec: ClusterSpec, n: int, index: int, busy: bool, is_shared: bool) -> str:
    """The role (FLEET_ROLES) of whole GPU `index` of node `n`; "" outside the scenario."""
    if not spec.fleet:
        return ""
    if is_shared:
        return "busy"
    if node_name(spec, n) == unrequested_node(spec):
        return "free"
    draw = _fleet_draws(spec, n, index)[0]
    if busy:
        return "outside" if draw < 0.12 else "busy"
    return "held-idle" if draw < 0.4 else "cycling" if draw < 0.75 else "free"


def fleet_instance_role(spec: ClusterSpec, n: int, ordinal: int, busy: bool) -> str:
    """The role of a MIG instance (numbered across its node): busy, held-idle or free."""
    if not spec.fleet:
        return ""
    if busy:
        return "busy"
    return "held-idle" if _fleet_draws(spec, n, 1024 + ordinal)[0] < 0.5 else "free"


def cycle_busy(phase: int, step: int) -> bool:
    """Tell whether a cycling GPU's job runs at `step` (the first half of each cycle)."""
    return (step + phase) % CYCLE_STEPS < CYCLE_STEPS // 2


def _cycle_busy_before(m: int) -> int:
    """How many of the steps 0..m-1 fall in the first half of their cycle."""
    half = CYCLE_STEPS // 2
    return (m // CYCLE_STEPS) * half + min(m % CYCLE_STEPS, half)


def _working(spec: ClusterSpec, role: str, busy: bool, n: int, index: int, step: int) -> bool:
    if role == "cycling":
        return cycle_busy(_fleet_draws(spec, n, index)[1], step)
    return busy if not role else role in ("busy", "outside")


def _busy_steps(spec: ClusterSpec, role: str, busy: bool, n: int, index: int,
                first: int, last: int) -> int:
    """How many steps from `first` to `last` (both included) the GPU's job ran."""
    if role == "cycling":
        phase = _fleet_draws(spec, n, index)[1]
        return _cycle_busy_before(last + phase + 1) - _cycle_busy_before(first + phase)
    return last - first + 1 if _working(spec, role, busy, n, index, first) else 0


def driver_loaded_at(spec: ClusterSpec, n: int, index: int, step: int) -> int:
    """The first step since the GPU's driver last loaded (its energy counter's zero)."""
    phase = _fleet_draws(spec, n, index)[2]
    return step - (step + phase) % DRIVER_RELOAD_STEPS


def energy_mj(spec: ClusterSpec, n: int, index: int, step: int, idle_power_w: float,
              busy_power_w: float, busy_steps: Callable[[int, int], int]) -> float:
    """The energy counter at `step`: each step since the driver loaded adds its mean
    power (busy or idle) over STEP_SECONDS, in mJ. The power gauge jitters around it."""
    loaded = driver_loaded_at(spec, n, index, step)
    ran = busy_steps(loaded, step)
    steps = step - loaded + 1
    joules = (busy_power_w * ran + idle_power_w * (steps - ran)) * STEP_SECONDS
    return round(joules * 1000.0, 1)


def _as_role(work: _Workload, role: str, working: bool) -> _Workload:
    """What a role makes of the job a GPU would run: a held GPU that does nothing keeps
    its pods with nothing in use; work outside Kubernetes keeps its processes, no pods."""
    if role in ("held-idle", "cycling") and not working:
        count = len(work.pods)
        return dataclasses.replace(work, utilization=0, memory_copy_utilization=0, used_mib=0,
                                   util_shares=(0.0,) * count, memory_shares=(0,) * count,
                                   processes=())
    if role == "outside":
        return dataclasses.replace(work, pods=(), util_shares=(), memory_shares=())
    if role == "free":
        return _Workload(work.base_utilization, 0, 0, 0, (), (), (), ())
    return work


def pending_pods(spec: ClusterSpec) -> list[tuple[SimPod, int]]:
    """Pods of the fleet scenario waiting for GPUs (nvidia.com/gpu), with their request."""
    if not spec.fleet:
        return []
    count = max(2, spec.nodes // 2)
    return [(SimPod(f"queued-train-{spec.seed:x}-{i:03d}", _NAMESPACES[i % len(_NAMESPACES)],
                    "trainer"), 1 + i % 2) for i in range(count)]


def _row(
    device: _Device,
    work: _Workload,
    total_mib: int,
    reserved_mib: int,
    temperature: float,
    power_w: float,
    sm_clock_mhz: float,
    mig_instance: int | None = None,
    mig_profile: str | None = None,
    health: SimHealth = SimHealth(),
    energy_mj: float | None = None,
    role: str = "",
) -> SimGpu:
    return SimGpu(
        node=device.node,
        index=device.index,
        uuid=device.uuid,
        name=device.model.name,
        pci_bus_id=device.pci_bus_id,
        driver_version=device.driver_version,
        utilization=float(work.utilization),
        memory_copy_utilization=float(work.memory_copy_utilization),
        memory_total_bytes=total_mib * MIB,
        memory_used_bytes=work.used_mib * MIB,
        memory_reserved_bytes=reserved_mib * MIB,
        memory_free_bytes=(total_mib - reserved_mib - work.used_mib) * MIB,
        temperature=temperature,
        power_w=power_w,
        sm_clock_mhz=sm_clock_mhz,
        mig_instance=mig_instance,
        mig_profile=mig_profile,
        pods=work.pods,
        util_shares=work.util_shares,
        memory_shares=tuple(share * MIB for share in work.memory_shares),
        processes=work.processes,
        host_cpu_percent=device.host_cpu_percent,
        host_memory_percent=device.host_memory_percent,
        health=health,
        energy_mj=energy_mj,
        role=role,
    )


def _workload(
    spec: ClusterSpec,
    static: random.Random,
    dynamic: random.Random,
    step: int,
    busy: bool,
    pod_count: int,
    usable_mib: int,
    ordinal: int,
) -> _Workload:
    # Draw every static value before branching so a GPU's identity never depends on step.
    s = static.random
    base, swing, phase = 35 + 55 * s(), 5 + 15 * s(), 6.3 * s()
    mem_base, copy_factor = 0.25 + 0.6 * s(), 0.3 + 0.5 * s()
    tenants = [_tenant(static) for _ in range(pod_count)]
    if not busy:
        return _Workload(base, 0, 0, 0, (), (), (), ())
    d = dynamic.random
    util = _clamp(round(base + swing * math.sin(step * 0.45 + phase) + 8 * d() - 4), 1, 100)
    fraction = mem_base + 0.08 * math.sin(step * 0.21 + phase) + 0.04 * d() - 0.02
    fraction = min(max(fraction, 0.05), 0.97)
    # Every pod on a time-sliced GPU runs at least one process.
    per_gpu = spec.processes_per_busy_gpu
    process_count = max(per_gpu, pod_count) if per_gpu else 0
    used_mib = max(int(fraction * usable_mib), process_count, pod_count)
    weights = [t.weight for t in tenants]
    memory_shares = _split(used_mib, weights, minimum=1)
    util_shares = tuple(float(share) for share in _split(util, weights))
    processes = _processes(static, dynamic, step, ordinal, process_count, tenants, memory_shares)
    return _Workload(
        base_utilization=base,
        utilization=util,
        memory_copy_utilization=_clamp(round(util * copy_factor), 0, 100),
        used_mib=used_mib,
        pods=tuple(t.pod for t in tenants),
        util_shares=util_shares,
        memory_shares=tuple(memory_shares),
        processes=processes,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Tenant:
    """A pod with the workload and user its processes run as."""

    pod: SimPod
    process_name: str
    command: str
    user: str
    uid: int
    weight: float


def _tenant(static: random.Random) -> _Tenant:
    s = static.random
    workload, container, process_name, command = _WORKLOADS[int(s() * len(_WORKLOADS))]
    namespace = _NAMESPACES[int(s() * len(_NAMESPACES))]
    user, uid = _USERS[int(s() * len(_USERS))]
    pod = SimPod(f"{workload}-{static.getrandbits(32):08x}-{int(s() * 8)}", namespace, container)
    return _Tenant(pod, process_name, command, user, uid, 0.5 + s())


def _processes(
    static: random.Random,
    dynamic: random.Random,
    step: int,
    ordinal: int,
    count: int,
    tenants: list[_Tenant],
    pod_memory_mib: list[int],
) -> tuple[SimProcess, ...]:
    memory = [0] * count
    for p, pod_mib in enumerate(pod_memory_mib):
        members = range(p, count, len(tenants))  # process j runs in pod j % len(tenants)
        weights = [1.0 + j for j in members]
        for j, mib in zip(members, _split(pod_mib, weights, minimum=1), strict=True):
            memory[j] = mib
    s, d = static.random, dynamic.random
    result = []
    for j in range(count):
        tenant = tenants[j % len(tenants)]
        cpu_base, mem_base = 20 + 120 * s(), 0.5 + 5.5 * s()
        started, lifetime = 600 + 85800 * s(), 2000 + int(4000 * s())
        result.append(
            SimProcess(
                # Unique per node: 1000 pids per GPU row, 10 per process, jitter below 10.
                pid=1000 * (ordinal + 1) + 10 * j + int(10 * s()),
                process_name=tenant.process_name,
                user=tenant.user,
                uid=tenant.uid,
                command=tenant.command,
                gpu_memory_bytes=memory[j] * MIB,
                cpu_percent=round(cpu_base * (0.5 + 0.5 * d()), 1),
                memory_percent=round(max(0.1, mem_base + 0.4 * d() - 0.2), 1),
                running_time_s=round(started + (step % lifetime) * STEP_SECONDS, 1),
            )
        )
    return tuple(result)


def _sensors(
    model: _Model, static: random.Random, dynamic: random.Random, util: int
) -> tuple[float, float, float, float]:
    """Temperature, power, SM clock, and the GPU's power efficiency (its static draw)."""
    s, d = static.random, dynamic.random
    ambient, efficiency = 28 + 8 * s(), 0.8 + 0.15 * s()
    temperature = float(round(ambient + util * 0.4 + 3 * d() - 1.5))
    span = model.max_power_w - model.idle_power_w
    power = round(model.idle_power_w + span * util / 100 * efficiency + 6 * d() - 3, 2)
    if not util:
        return temperature, power, _IDLE_SM_CLOCK_MHZ, efficiency
    return temperature, power, float(model.max_sm_clock_mhz - 15 * int(5 * d())), efficiency


def _split(total: int, weights: list[float], minimum: int = 0) -> list[int]:
    """Split an integer into parts proportional to weights that sum exactly to it."""
    floor_total = total - minimum * len(weights)
    if floor_total < 0:
        raise ValueError("total too small for the minimum")
    if len(weights) == 1:
        return [total]
    scale = floor_total / sum(weights)
    raw = [w * scale for w in weights]
    parts = [int(r) for r in raw]
    # Largest remainder: hand the leftover units to the parts that lost most to rounding.
    order = sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in order[: floor_total - sum(parts)]:
        parts[i] += 1
    return [p + minimum for p in parts]


def _uuid(static: random.Random) -> str:
    h = f"{static.getrandbits(128):032x}"
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _pci_bus_id(index: int) -> str:
    bus = _PCI_BUSES[index] if index < len(_PCI_BUSES) else 0xC0 + index
    return f"00000000:{bus:02X}:00.0"


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)
