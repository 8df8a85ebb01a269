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
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "user",
    "metadata",
    "store",
)

# Fields that ask for what one agent turn cannot give. Each maps to the values
# that ask for nothing more (accepted, as client libraries send them by
# default); any other value is a 400 naming the field and saying why.
# ``n``: a turn runs tools with side effects, so it runs once.
REFUSED_UNLESS: dict[str, tuple[object, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "audio": (None,),
    "modalities": (None, ["text"]),
}
REFUSED_WHY = {
    "n": "n must be 1 or null: a turn runs tools with side effects, so it runs once and has one answer.",
    "logprobs": "logprobs is not supported: an agent turn's answer carries no token log probabilities.",
    "top_logprobs": "top_logprobs is not supported: an agent turn's answer carries no token log probabilities.",
    "audio": "audio output is not supported: the agent answers in text.",
    "modalities": 'modalities must be ["text"] or null: the agent answers in text.',
}

# response_format: what reaches the model (the provider checks the schema itself).
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
STRUCTURED_TYPES = ("json_object", "json_schema")
JSON_SCHEMA_NAME_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
JSON_SCHEMA_NAME = re.compile(JSON_SCHEMA_NAME_PATTERN)
