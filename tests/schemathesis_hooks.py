"""Schemathesis hooks for ``test_fuzz``: what the OpenAPI document cannot say.

The order of messages is one such rule: a system or developer message after
the user message of the turn is a 400 (``system_message_after_user``), but
JSON Schema has no way to speak of one array item standing after another.
Such bodies are dropped from generation; ``test_client_messages`` and
``test_openapi`` pin the 400 itself.
"""

from __future__ import annotations

from typing import Any

import schemathesis

INSTRUCTION_ROLES = ("system", "developer")


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """False for a chat body with an instruction message after a user message (both phases call it)."""
    body = case.body
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return True
    seen_user = False
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            seen_user = True
        elif seen_user and role in INSTRUCTION_ROLES:
            return False
    return True
