"""The one rule for a file sent inline in a JSON body: a ``data:<mime>;base64,...`` URL.

Shared by Chat Completions (``stages/validate.py``) and the Responses API
(``nanobot/responses/request.py``), so both refuse remote and malformed URLs alike.
"""

from __future__ import annotations

from typing import Any

from nanobot.errors import InvalidRequest


def parse_data_url(url: Any, param: str) -> str:
    """The base64 payload of a ``data:<mime>;base64,...`` URL (not yet decoded)."""
    if not isinstance(url, str) or not url:
        raise InvalidRequest("Expected a data URL string.", param=param, code="invalid_data_url")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        raise InvalidRequest(
            "Remote URLs are not fetched: send the file inline as a data URL (data:<mime>;base64,...).",
            param=param,
            code="remote_url_not_supported",
        )
    if scheme != "data":
        raise InvalidRequest(
            "Only data URLs (data:<mime>;base64,...) are supported.", param=param, code="invalid_data_url"
        )
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise InvalidRequest(
            "Malformed data URL: expected data:<mime>;base64,<data>.", param=param, code="invalid_data_url"
        )
    return payload
