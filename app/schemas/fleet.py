"""The fleet view's answers: the cluster, its nodes and its namespaces."""

from __future__ import annotations

from marshmallow import Schema, fields

from app.services.idle import STATES

_WINDOW = " over the window"


class Units(fields.Float):
    """A number of resource units: whole ones written as integers (8, not 8.0)."""

    def _format_num(self, value: object) -> float | int:
        number = super()._format_num(value)
        return int(number) if number.is_integer() else number


def _number(description: str) -> fields.Float:
    return fields.Float(allow_none=True, metadata={"description": description})


def _units(description: str) -> Units:
    return Units(allow_none=True, metadata={"description": description})


class _Figures(Schema):
    """What every fleet answer sums up over its GPUs."""

    utilization_avg = _number("Average utilization (%) of the GPUs" + _WINDOW)
    memory_used = fields.Integer(allow_none=True, metadata={"description": "Bytes used now "
                                                                           "(sum)"})
    memory_total = fields.Integer(allow_none=True, metadata={"description": "Bytes in all "
                                                                            "(sum)"})
    power_usage = _number("Watts now (sum; a MIG device counted once)")
    energy_joules = _number("Joules" + _WINDOW + ": the increase of "
                            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, else the integral of power")
    idle_gpu_seconds = _number("Seconds GPUs spent below the idle threshold" + _WINDOW
                               + " (sum)")


class GpuCountsSchema(Schema):
    """How many GPUs, by state and by model."""

    total = fields.Integer(metadata={"description": "Physical GPUs"})
    mig_instances = fields.Integer(metadata={"description": "MIG instances (rows of their own)"})
    by_state = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "Rows (GPUs and MIG instances) per state: " + ", ".join(STATES)})
    by_model = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "Physical GPUs per model"})


class ResourceAllocationSchema(Schema):
    """One GPU resource's units (nvidia_com_gpu, nvidia_com_gpu_shared, nvidia_com_mig_*)."""

    allocatable = _units("Units the nodes offer")
    requested = _units("Units running pods' containers request")
    pending_requests = _units("Units pending pods' containers request")


class AllocationSchema(Schema):
    """Kubernetes' side (kube-state-metrics): null where it is not installed."""

    kube_state_metrics = fields.Boolean(metadata={
        "description": "Whether Prometheus holds kube-state-metrics' series"})
    allocatable = _units("GPU resource units the nodes offer (kube_node_status_allocatable)")
    requested = _units("GPU resource units requested by the containers of running pods "
                       "(init containers do not add)")
    held = fields.Integer(metadata={
        "description": "GPUs and MIG instances the exporters attribute to a pod"})
    pending_requests = _units("GPU resource units requested by pending pods")
    by_resource = fields.Dict(keys=fields.String(),
                              values=fields.Nested(ResourceAllocationSchema))
    scope = fields.String(allow_none=True, metadata={
        "description": "What a filter leaves out of the allocation figures"})


class ClusterSchema(_Figures):
    """The whole cluster (within the filters)."""

    window = fields.String(metadata={"description": "The window, e.g. 1h"})
    gpus = fields.Nested(GpuCountsSchema)
    allocation = fields.Nested(AllocationSchema)


class NodeSchema(_Figures):
    """One node: its GPUs, their allocation and use."""

    node_name = fields.String(required=True)
    gpu_name = fields.String(allow_none=True, metadata={"description": "Its commonest model"})
    gpus = fields.Integer(metadata={"description": "Physical GPUs"})
    mig_instances = fields.Integer()
    allocatable = _units("GPU resource units the node offers (null without "
                         "kube-state-metrics)")
    requested = _units("Units its running pods request")
    held = fields.Integer(metadata={"description": "Rows held by a pod"})
    busy = fields.Integer(metadata={"description": "Rows not idle (allocated-busy, "
                                                   "unallocated-busy)"})
    idle = fields.Integer(metadata={"description": "Rows idle (allocated-idle, free)"})


class NamespaceSchema(Schema):
    """One namespace holding or requesting GPUs."""

    namespace = fields.String(required=True)
    pods = fields.Integer(metadata={"description": "Its pods holding or requesting GPUs"})
    gpus_requested = _units("GPU resource units its running pods request")
    pending_requests = _units("GPU resource units its pending pods request")
    gpus_held = fields.Integer(metadata={
        "description": "GPUs and MIG instances a pod of it holds (a shared GPU counts in "
                       "each namespace sharing it)"})
    utilization_avg = _number("Average utilization (%) of those GPUs" + _WINDOW)
    idle_gpu_seconds = _number("Their seconds below the idle threshold" + _WINDOW)
    energy_joules = _number("Their energy" + _WINDOW + "; a shared GPU's is split")
    energy_split = fields.String(metadata={
        "description": "How shared GPUs' energy was split: utilization-share (the pods' own "
                       "utilization, dcgm-exporter 4.8+), even, mixed, or none (no GPU of "
                       "the namespace is shared)",
        "enum": ["utilization-share", "even", "mixed", "none"]})
