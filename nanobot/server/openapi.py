"""The OpenAPI 3.1 document of this server, served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

from nanobot.config import Config


def document(config: Config) -> dict[str, Any]:
    """The OpenAPI document for a server running with ``config``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "nanobot API", "version": "0.1.0"},
        "paths": {},
    }
