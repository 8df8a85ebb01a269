"""What of a URL may be shown: its origin, or the URL without its userinfo.

Below both :mod:`nanobot.config` (``config check`` output) and
:mod:`nanobot.redact` (the redactor's replacements), which import it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

MASK = "***"


def public_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what a log or ``config check`` may show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}" if parts.scheme and host else MASK


def strip_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return MASK
    userinfo, at, _ = netloc.rpartition("@")
    return url.replace(userinfo + at, MASK + "@", 1) if at else url
