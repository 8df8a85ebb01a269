"""Constants the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

CHAT = "/v1/chat/completions"
CHAT_MODEL = "echo"  # the shipped default model (agents.defaults.model)
MIB = 1024 * 1024
