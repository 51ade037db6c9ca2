"""Custom dialects from a mapping file: loaded, converted, and refused with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import create_app
from app.config import ConfigError
from app.dialects.mapping import load_mapping_file
from app.dialects.model import MIB

GOOD = """
dialects:
  - name: acme
    description: ACME in-house exporter
    labels: {node: [host], index: [gpu], name: [model]}
    gpu_fields:
      utilization: [{metric: acme_gpu_busy_ratio, unit: ratio}]
      memory_used: [{metric: acme_gpu_mem_used_mib, unit: MiB, per_pod: true}]
      temperature: [{metric: acme_gpu_temp, scale: 1}]
    process_fields:
      gpu_memory: [{metric: acme_proc_mem_bytes}]
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_mapping_file_becomes_a_dialect_with_unit_scales(tmp_path: Path) -> None:
    (dialect,) = load_mapping_file(write(tmp_path, "m.yaml", GOOD))
    assert dialect.name == "acme" and dialect.labels.node == ("host",)
    (util,) = dialect.gpu_fields["utilization"]
    assert util.metric == "acme_gpu_busy_ratio" and util.scale == 100.0
    (used,) = dialect.gpu_fields["memory_used"]
    assert used.scale == MIB and used.per_pod
    assert dialect.process_fields["gpu_memory"][0].scale == 1.0


def test_json_mapping_files_are_accepted(tmp_path: Path) -> None:
    document = {"dialects": [{"name": "j", "labels": {"node": ["n"], "uuid": ["u"]},
                              "gpu_fields": {"temperature": [{"metric": "t"}]}}]}
    (dialect,) = load_mapping_file(write(tmp_path, "m.json", json.dumps(document)))
    assert dialect.labels.uuid == ("u",)


@pytest.mark.parametrize(("text", "words"), [
    ("dialects: []", "dialects"),
    ("- just a list", "mapping"),
    ("dialects: [{name: x, labels: {node: [n], index: [i]}, gpu_fields: "
     "{speed: [{metric: m}]}}]", "speed"),
    ("dialects: [{name: x, labels: {node: [n], index: [i]}, gpu_fields: "
     "{utilization: [{metric: 'bad name'}]}}]", "bad name"),
    ("dialects: [{name: x, labels: {node: ['a-b'], index: [i]}, gpu_fields: "
     "{utilization: [{metric: m}]}}]", "a-b"),
    ("dialects: [{name: x, labels: {node: [n], index: [i]}, gpu_fields: "
     "{utilization: [{metric: m, unit: furlongs}]}}]", "unit"),
    ("dialects: [{name: x, labels: {node: [n]}, gpu_fields: {utilization: [{metric: m}]}}]",
     "index or a uuid"),
    ("dialects: [{name: x, labels: {node: [n], index: [i]}, gpu_fields: "
     "{utilization: [{metric: m, unit: MiB, scale: 2}]}}]", "either unit or scale"),
    ("{unclosed", "not valid YAML"),
])
def test_bad_mapping_files_are_refused_with_where_and_what(tmp_path: Path, text: str,
                                                          words: str) -> None:
    with pytest.raises(ValueError, match=words):
        load_mapping_file(write(tmp_path, "bad.yaml", text))


def test_a_bad_mapping_file_stops_startup_naming_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "dialects: []")
    with pytest.raises(ConfigError, match="METRICS_MAPPING_FILE"):
        create_app({"METRICS_MAPPING_FILE": path})


def test_a_custom_dialect_can_be_forced_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", GOOD)
    app = create_app({"METRICS_MAPPING_FILE": path, "METRICS_DIALECT": "acme"})
    assert [d.name for d in app.extensions["gpu_monitor"].dialects.candidates] == ["acme"]
    with pytest.raises(ConfigError, match="unknown dialect"):
        create_app({"METRICS_DIALECT": "acme"})
