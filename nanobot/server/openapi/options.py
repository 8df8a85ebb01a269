"""Schemas of the request fields that change what the model is asked for.

They follow ``nanobot/request_options.py``: ``response_format`` (json_object
and json_schema only when the provider can produce them), and the fields
accepted only with the values that ask for nothing more.
"""

from __future__ import annotations

from nanobot.config import Config
from nanobot.request_options import structured_output
from nanobot.request_rules import JSON_SCHEMA_NAME_PATTERN, REFUSED_UNLESS, REFUSED_WHY
from nanobot.server.openapi.common import Json


def _format(kind: str, **extra: Json) -> Json:
    return {
        "type": "object",
        "required": ["type", *extra],
        "properties": {"type": {"const": kind}, **extra},
    }


def response_format(config: Config) -> Json:
    json_schema = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": JSON_SCHEMA_NAME_PATTERN},
            "description": {"type": ["string", "null"]},
            "schema": {"type": ["object", "null"]},
            "strict": {"type": ["boolean", "null"]},
        },
    }
    choices: list[Json] = [{"type": "null"}, _format("text")]
    if structured_output(config):
        choices += [_format("json_object"), _format("json_schema", json_schema=json_schema)]
        about = (
            "`json_object` or `json_schema`: sent to the model on every call of the turn, so the reply is "
            "structured. `text` or null: the default."
        )
    else:
        about = "The echo provider cannot produce structured output: json_object and json_schema are 400."
    return {"anyOf": choices, "description": about}


def refused_fields() -> dict[str, Json]:
    """Each refused field: the values accepted, and why others are not."""
    return {
        name: {"enum": list(allowed), "description": f"Other values: 400. {REFUSED_WHY[name]}"}
        for name, allowed in REFUSED_UNLESS.items()
    }
