"""Schemathesis hooks for tests/test_fuzz.py (loaded through ``SCHEMATHESIS_HOOKS``).

Some rules no JSON Schema can state: a system or developer message after
the user message of the turn is refused (JSON Schema cannot say where one
array item stands beside another), and client function tools have more: a named
``tool_choice`` must name one of the request's own ``tools``, no tool may
share a name with another or with a server tool, and ``tool`` results must
answer the session's pending calls. A schema-valid body that breaks one of
those is a 400 with its own code; only those refusals are not failures.
"""

from __future__ import annotations

from typing import Any

import schemathesis

# The codes of those rules (nanobot/client_messages.py, nanobot/client_tools.py); any other
# 400 of valid data stays a failure.
CROSS_FIELD_CODES = frozenset(
    {
        "system_message_after_user",
        "unknown_tool",
        "tool_name_collision",
        "duplicate_tool_name",
        "tool_schema_too_large",
        "no_pending_tool_calls",
        "unknown_tool_call_id",
        "missing_tool_results",
        "duplicate_tool_result",
    }
)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if response.status_code != 400 or "rejected" not in str(getattr(failure, "title", "")):
        return True
    try:
        code = response.json()["error"]["code"]
    except Exception:
        return True
    return code not in CROSS_FIELD_CODES
