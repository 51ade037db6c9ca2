"""Read a dialect's labels: which GPU (or MIG instance) a series names, and what it is.

A reader is compiled once per dialect, because its key runs for every series of every answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from app.dialects.model import Dialect

Labels = dict[str, str]
# (node, UUID or index, MIG instance or "")
GpuKey = tuple[str, str, str]
# (pod, namespace, container)
PodKey = tuple[str, str, str]


def first_label(candidates: Sequence[str]) -> Callable[[Labels], str | None]:
    """Return a reader of the first non-empty label among `candidates` (None if none)."""
    if not candidates:
        return lambda labels: None
    if len(candidates) == 1:
        (only,) = candidates
        return lambda labels: labels.get(only) or None
    names = tuple(candidates)

    def read(labels: Labels) -> str | None:
        for name in names:
            value = labels.get(name)
            if value:
                return value
        return None

    return read


def int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


class GpuLabelReader:
    """Reads one dialect's labels into GPU keys and attributes."""

    def __init__(self, dialect: Dialect) -> None:
        labels = dialect.labels
        self.node = first_label(labels.node)
        self.index = first_label(labels.index)
        self.uuid_raw = first_label(labels.uuid)
        self.name = first_label(labels.name)
        self.mig_label = first_label(labels.mig_instance)
        self.mig_profile = first_label(labels.mig_profile)
        self.pod = first_label(labels.pod)
        self.namespace = first_label(labels.namespace)
        self.container = first_label(labels.container)
        self.by_uuid = bool(labels.uuid)
        self.uuid_without_prefix = dialect.uuid_without_prefix
        self.index_encodes_mig = dialect.index_encodes_mig
        self.name_encodes_mig_profile = dialect.name_encodes_mig_profile
        self.key = self._compile_key(dialect)

    def uuid(self, labels: Labels) -> str | None:
        raw = self.uuid_raw(labels)
        if raw and self.uuid_without_prefix:
            return "GPU-" + raw.lower()
        return raw

    def gpu_index(self, labels: Labels) -> int | None:
        """The GPU's index (of a MIG device's parent, where the index encodes MIG)."""
        raw = self.index(labels)
        if raw and self.index_encodes_mig:
            raw = raw.partition(":")[0]
        return int_or_none(raw)

    def mig(self, labels: Labels) -> str | None:
        """The MIG instance id, from its own label or from a "<gpu>:<instance>" index."""
        found = self.mig_label(labels)
        if found or not self.index_encodes_mig:
            return found
        raw = self.index(labels)
        return raw.partition(":")[2] or None if raw else None

    def model_and_profile(self, labels: Labels) -> tuple[str | None, str | None]:
        """The model name, and a MIG profile where the name says "<model> MIG <profile>"."""
        name = self.name(labels)
        if name and self.name_encodes_mig_profile and " MIG " in name:
            model, _, profile = name.partition(" MIG ")
            return model, profile
        return name, None

    def _compile_key(self, dialect: Dialect) -> Callable[[Labels], GpuKey | None]:
        """Build `key(labels)`: (node, uuid or index, MIG instance), or None when the series
        names no GPU. Built once per dialect: it runs for every series of every answer."""
        spec = dialect.labels
        node_of = first_label(spec.node)
        device_of = first_label(spec.uuid or spec.index)
        mig_of = first_label(spec.mig_instance)
        index_of = first_label(spec.index)
        lower = bool(spec.uuid) and dialect.uuid_without_prefix
        # nvitop writes a MIG device's index as "<gpu>:<instance>"; without a UUID label,
        # the device is that index's first part.
        encoded = dialect.index_encodes_mig
        device_is_index = encoded and not spec.uuid
        device_names = spec.uuid or spec.index
        if (len(spec.node) == 1 and len(device_names) == 1 and len(spec.mig_instance) <= 1
                and not (encoded or lower)):
            return single_label_key(spec.node[0], device_names[0], spec.mig_instance)

        def key(labels: Labels) -> GpuKey | None:
            node = node_of(labels)
            device = device_of(labels)
            if not node or not device:
                return None
            mig = mig_of(labels) or ""
            if not mig and encoded:
                index = index_of(labels)
                if index and ":" in index:
                    mig = index.partition(":")[2]
            if lower:
                device = device.lower()
            elif device_is_index:
                device = device.partition(":")[0]
            return node, device, mig

        return key


def single_label_key(node_label: str, device_label: str,
                      mig_labels: Sequence[str]) -> Callable[[Labels], GpuKey | None]:
    """The key where each part has one label name: the common case, read without loops."""
    if not mig_labels:
        def key(labels: Labels) -> GpuKey | None:
            node = labels.get(node_label)
            device = labels.get(device_label)
            return (node, device, "") if node and device else None

        return key
    (mig_label,) = mig_labels

    def key_with_mig(labels: Labels) -> GpuKey | None:
        node = labels.get(node_label)
        device = labels.get(device_label)
        return (node, device, labels.get(mig_label) or "") if node and device else None

    return key_with_mig


