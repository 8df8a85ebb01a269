"""Where the chat page's files live (``nanobot/static``), for the page and the API description."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
