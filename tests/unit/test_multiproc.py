"""Where gunicorn's workers keep their metric files, chosen before any worker starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.telemetry import multiproc


def test_a_named_directory_is_used_and_created_when_only_its_parent_exists(
        tmp_path: Path) -> None:
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    path, made = multiproc.prepare(environ)
    assert path == tmp_path / "metrics" and path.is_dir() and made is False
    assert environ == {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}


def test_without_a_name_a_private_directory_is_made_and_exported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A read-only root: no /dev/shm to write to, only the temporary directory.
    monkeypatch.setattr(multiproc, "_CANDIDATES", (str(tmp_path / "absent"),))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(multiproc.tempfile, "tempdir", None)
    environ: dict[str, str] = {}
    path, made = multiproc.prepare(environ)
    assert made is True and path.parent == tmp_path and path.is_dir()
    assert environ["PROMETHEUS_MULTIPROC_DIR"] == str(path)
    multiproc.remove(path)
    assert not path.exists()


def test_a_directory_that_cannot_be_made_is_an_error_naming_the_variable(
        tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(multiproc.MultiprocDirError, match="PROMETHEUS_MULTIPROC_DIR="):
        multiproc.prepare({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "file" / "m")})
    with pytest.raises(multiproc.MultiprocDirError, match="not a writable directory"):
        multiproc.prepare({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "file")})


def test_clear_removes_the_files_of_a_previous_run_only(tmp_path: Path) -> None:
    for name in ("counter_12.db", "gauge_livemax_12.db", "notes.txt"):
        (tmp_path / name).write_text("x")
    multiproc.clear(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
