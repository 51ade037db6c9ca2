"""The built-in dashboard: one page at `/` and its assets under /ui/static, from the package.

The page is plain HTML, CSS and JavaScript that reads only the public API with relative
URLs, so it works offline, behind `kubectl port-forward` and under an ingress path prefix.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from app.api.openapi import Operation

STATIC_DIR = Path(__file__).resolve().parent / "static"

bp = Blueprint("ui", __name__, static_folder=str(STATIC_DIR), static_url_path="/ui/static")

# The page's own policy: its script, its stylesheet and fetches to its own origin, nothing
# inline, no eval, no framing. The JSON endpoints keep SECURITY_HEADERS' stricter one.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@bp.get("/")
@Operation("The built-in dashboard page (HTML; its assets are under /ui/static/)",
           ok="The dashboard page", body={"type": "string"}, errors=(),
           media_type="text/html")
def page() -> Response:
    """The single page; everything it shows it fetches from /api/v1."""
    return send_from_directory(STATIC_DIR, "index.html", mimetype="text/html")


@bp.after_request
def page_policy(response: Response) -> Response:
    """Set the page's CSP on the page and its assets (app-wide headers only fill gaps)."""
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response
