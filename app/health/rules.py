"""GPU health rules as data: what each signal means and what to do, per NVIDIA's documents.

Sources (the README's rule table cites them per row):
- XID: NVIDIA's XID catalog, https://docs.nvidia.com/deploy/xid-errors/ (the "Resolution
  Bucket" columns: RESTART_APP, RESET_GPU, RESTART_BM, CONTACT_SUPPORT), and its pages on
  dynamic page retirement and row remapping.
- ECC, row remapping: NVIDIA's A100/H100 memory error management guide,
  https://docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/ (pending remaps apply at the next
  reset; a remap failure is an RMA threshold).
- Clock event (throttle) reasons: NVML's nvmlClocksEventReasons bit values, as dcgm-exporter
  exports them in DCGM_FI_DEV_CLOCK_THROTTLE_REASONS / DCGM_FI_DEV_CLOCKS_EVENT_REASONS.
- DCGM health watches: DCGM_EXP_GPU_HEALTH_STATUS is DCGM's health result per watch
  (0 pass, 10 warn, 20 fail), labelled health_watch and health_error_code.
- Which counters exist by default: dcgm-exporter's etc/default-counters.csv.

A rule is a row; the evaluator has one code path per *kind* of rule, never per signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["critical", "unknown", "warning"]
# Worst first: a GPU with a critical fault is critical even while its exporter is down;
# a GPU we cannot see is worse than one with a warning (Icinga's order of states).
SEVERITY_RANK: dict[str, int] = {"critical": 0, "unknown": 1, "warning": 2}
STATUSES = ("ok", "warning", "critical", "unknown")

APP_FAULT = ("Application fault, not the GPU: check the job (illegal memory access, bad "
             "kernel); if it follows this GPU across jobs, run `dcgmi diag -r 3`")
RESET_GPU = "Drain the GPU's jobs and reset it (`nvidia-smi -r`)"


@dataclass(frozen=True)
class XidClass:
    """What one XID code means: its severity, a short meaning and the action."""

    code: int
    severity: Severity
    meaning: str
    action: str


# NVIDIA XID catalog: the codes a GPU cluster meets, by resolution bucket.
XID_CLASSES: dict[int, XidClass] = {x.code: x for x in (
    XidClass(13, "warning", "graphics engine exception", APP_FAULT),
    XidClass(31, "warning", "GPU memory page fault", APP_FAULT),
    XidClass(43, "warning", "GPU stopped processing (the application hit an exception)",
             APP_FAULT),
    XidClass(45, "warning", "preemptive cleanup after earlier errors",
             "Look for the XID logged before it; restart the application"),
    XidClass(48, "critical", "double-bit (uncorrectable) ECC error",
             RESET_GPU + "; if double-bit errors recur, RMA the GPU"),
    XidClass(63, "warning", "row remapping (page retirement) recorded, pending until reset",
             "Reset the GPU when its jobs finish so the remap takes effect"),
    XidClass(64, "critical", "row remapping (page retirement) failed",
             "Drain the GPU and RMA it (contact NVIDIA support)"),
    XidClass(74, "critical", "NVLink error",
             RESET_GPU + "; if it recurs, check the NVLink/NVSwitch fabric and contact "
             "support"),
    XidClass(79, "critical", "GPU has fallen off the bus",
             "Drain and reboot the node; if it recurs, check the GPU's seating, power and "
             "PCIe slot, then RMA"),
    XidClass(92, "warning", "high single-bit ECC error rate",
             "Watch the GPU; run `dcgmi diag -r 3` and plan a reset"),
    XidClass(94, "warning", "contained ECC error (the affected application was stopped)",
             "Restart the application; reset the GPU when convenient to remap the row"),
    XidClass(95, "critical", "uncontained ECC error (every application on the GPU affected)",
             RESET_GPU),
    XidClass(119, "critical", "GSP RPC timeout", RESET_GPU + "; if it recurs, update the "
             "driver or disable GSP firmware"),
    XidClass(120, "critical", "GSP error", RESET_GPU + "; if it recurs, update the driver"),
)}
UNKNOWN_XID_ACTION = "Look the code up in NVIDIA's XID catalog"


def xid_class(code: int) -> XidClass:
    """The class of an XID code; a code not in the table is a warning that names it."""
    return XID_CLASSES.get(code) or XidClass(code, "warning", "not in the rule table",
                                              UNKNOWN_XID_ACTION)


# The XID sources: the gauge of the last code (in the default counters), and the count of
# each code over dcgm-exporter's 5-minute window (off by default).
XID_GAUGE = "DCGM_FI_DEV_XID_ERRORS"
XID_COUNT = "DCGM_EXP_XID_ERRORS_COUNT"
XID_COUNT_LABEL = "xid"

RuleKind = Literal["rise", "level"]


@dataclass(frozen=True)
class Rule:
    """One signal and what it means.

    `rise`: a counter rose within the window, by more than `per_hour` times the window's hours.
    `level`: at some instant of the window a gauge was at least `at_least` (and below
    `below`), or, for a bit field, had `bit` set.
    `metrics` are alternative names of the same signal (renamed across versions): all are
    read. `labels` are kept apart (one reason each) and named in the message.
    """

    code: str
    kind: RuleKind
    metrics: tuple[str, ...]
    severity: Severity
    message: str
    action: str
    per_hour: float = 0.0
    at_least: float = 1.0
    below: float | None = None
    bit: int | None = None
    labels: tuple[str, ...] = ()
    source: str = ""


_THROTTLE = ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS")
_NVML_CLOCKS = "NVML nvmlClocksEventReasons"
_MEM_GUIDE = "NVIDIA GPU memory error management"
_COOLING = ("Check the node's cooling and airflow, and the GPU's temperature and power "
            "history")

RULES: tuple[Rule, ...] = (
    Rule("ecc_dbe", "rise", ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",), "critical",
         "Double-bit (uncorrectable) ECC errors rose",
         RESET_GPU + "; if they recur, RMA the GPU", source=_MEM_GUIDE),
    Rule("ecc_sbe", "rise", ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",), "warning",
         "Single-bit ECC errors are rising fast (corrected, but a sign of failing memory)",
         "Watch the GPU; run `dcgmi diag -r 3` and plan a reset", per_hour=10.0,
         source=_MEM_GUIDE + " (XID 92)"),
    Rule("row_remap_failure", "level", ("DCGM_FI_DEV_ROW_REMAP_FAILURE",), "critical",
         "Row remapping failed: the GPU's memory has no spare rows left",
         "Drain the GPU and RMA it (contact NVIDIA support)", source=_MEM_GUIDE),
    Rule("uncorrectable_remapped_rows", "rise", ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",),
         "warning", "Rows were remapped after uncorrectable errors",
         "Reset the GPU when its jobs finish so the remap takes effect", source=_MEM_GUIDE),
    Rule("row_remap_pending", "level", ("DCGM_FI_DEV_ROW_REMAP_PENDING",), "warning",
         "A row remap is pending until the GPU is reset",
         "Reset the GPU when its jobs finish so the remap takes effect", source=_MEM_GUIDE),
    Rule("retired_pages_pending", "level", ("DCGM_FI_DEV_RETIRED_PENDING",), "warning",
         "Memory pages are pending retirement until the GPU is reset",
         "Reset the GPU when its jobs finish so the pages are retired", source=_MEM_GUIDE),
    Rule("throttle_hw_slowdown", "level", _THROTTLE, "warning",
         "Clocks slowed by hardware (HW slowdown, 0x8): overheating or a power brake signal",
         _COOLING + "; check the power supply", bit=0x8, source=_NVML_CLOCKS),
    Rule("throttle_sw_thermal", "level", _THROTTLE, "warning",
         "Clocks lowered by the driver to keep the GPU below its temperature limit (SW "
         "thermal slowdown, 0x20)", _COOLING, bit=0x20, source=_NVML_CLOCKS),
    Rule("throttle_hw_thermal", "level", _THROTTLE, "warning",
         "Clocks cut by hardware because the GPU overheated (HW thermal slowdown, 0x40)",
         _COOLING, bit=0x40, source=_NVML_CLOCKS),
    Rule("throttle_power_brake", "level", _THROTTLE, "warning",
         "Clocks cut by the external power brake signal (HW power brake slowdown, 0x80)",
         "Check the node's power supply and power capping", bit=0x80, source=_NVML_CLOCKS),
    Rule("pcie_replay", "rise", ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER",), "warning",
         "PCIe replays rose: the link to the GPU retransmits",
         "Check the GPU's seating and PCIe slot/riser; run `dcgmi diag -r 2`",
         source="DCGM PCIe health watch"),
    Rule("nvlink_crc", "rise", ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
                                "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL"), "warning",
         "NVLink CRC errors rose",
         "Check the NVLink/NVSwitch fabric (`nvidia-smi nvlink -e`); reset the GPU if they "
         "keep rising", source="DCGM NVLink health watch"),
    Rule("nvlink_replay", "rise", ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
                                   "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL"), "warning",
         "NVLink replays or recoveries rose",
         "Check the NVLink/NVSwitch fabric (`nvidia-smi nvlink -e`); reset the GPU if they "
         "keep rising", source="DCGM NVLink health watch"),
    Rule("dcgm_health_fail", "level", ("DCGM_EXP_GPU_HEALTH_STATUS",), "critical",
         "DCGM health watch reports a failure", "Run `dcgmi health -c` on the node for the "
         "details; " + RESET_GPU, at_least=20, labels=("health_watch", "health_error_code"),
         source="DCGM health watches (20 = fail)"),
    Rule("dcgm_health_warn", "level", ("DCGM_EXP_GPU_HEALTH_STATUS",), "warning",
         "DCGM health watch reports a warning", "Run `dcgmi health -c` on the node for the "
         "details", at_least=10, below=20, labels=("health_watch", "health_error_code"),
         source="DCGM health watches (10 = warn)"),
)

# Reasons about the exporter rather than the GPU: its verdict is unknown, never ok.
EXPORTER_DOWN = "exporter_down"
STALE = "stale"
NO_SIGNALS = "no_health_signals"
# A GPU's samples older than this many scrape intervals (of its target) are stale.
STALE_INTERVALS = 3
# The scrape interval assumed when the target's own samples do not tell it.
DEFAULT_SCRAPE_INTERVAL_S = 60.0

# Every metric a rule reads, XID sources first.
HEALTH_METRICS: tuple[str, ...] = tuple(dict.fromkeys(
    (XID_GAUGE, XID_COUNT, *(m for rule in RULES for m in rule.metrics))))
# What dcgm-exporter's default counters CSV enables (etc/default-counters.csv); the
# others must be added to the counters file (`-f`, or the chart's ConfigMap).
DEFAULT_CSV_METRICS = frozenset({
    XID_GAUGE, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
})
