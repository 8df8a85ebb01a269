"""The request fields' rules, stated once.

``stages/validate.py`` enforces them and the OpenAPI document
(``nanobot/server/openapi``) publishes them as JSON Schema, so the two cannot
drift apart. Patterns are written in the regular-expression syntax that
Python and ECMA-262 (JSON Schema) read alike.
"""

from __future__ import annotations

import re

# session_id (body field or X-Session-Id header): 1-256 characters, no C0 control or DEL.
SESSION_ID_MAX_CHARS = 256
_CONTROL_CLASS = r"\x00-\x1f\x7f"
SESSION_ID_FORBIDDEN = re.compile(f"[{_CONTROL_CLASS}]")
SESSION_ID_PATTERN = f"^[^{_CONTROL_CLASS}]*$"

# The multipart ``stream`` field, compared after strip().lower(); empty means false.
STREAM_TRUE = frozenset({"true", "1", "yes", "on"})
STREAM_FALSE = frozenset({"false", "0", "no", "off", ""})


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


_STREAM_WORDS = ("true", "1", "yes", "on", "false", "0", "no", "off")  # the sets above, in a fixed order
assert set(_STREAM_WORDS) | {""} == STREAM_TRUE | STREAM_FALSE
STREAM_FIELD_PATTERN = r"^\s*(?:" + "|".join(map(_any_case, _STREAM_WORDS)) + r")?\s*$"

# Client fields that are accepted and never reach the LLM (the server owns these settings).
IGNORED_OPENAI_FIELDS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "metadata",
    "store",
)
