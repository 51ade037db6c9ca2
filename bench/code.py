"""Which version of the service a measurement saw: other people change app/ while we run."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FILES = ("wsgi.py", "gunicorn.conf.py", "requirements.txt")


def fingerprint() -> str:
    """A short hash of the service's code and deployment files as they are on disk now."""
    digest = hashlib.sha256()
    paths = sorted((ROOT / "app").rglob("*.py")) + [ROOT / name for name in _FILES]
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError:
            continue
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]


def git_head() -> str:
    """The commit checked out, or an empty string."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
