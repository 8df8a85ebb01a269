"""The request fields that change what the model is asked for, checked.

``response_format`` reaches the model; ``n``, ``logprobs``, ``top_logprobs``,
``audio`` and ``modalities`` ask for what one agent turn cannot give and are
refused unless they ask for nothing more. A request without these fields
costs a few dictionary lookups here, nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nanobot.errors import InvalidRequest
from nanobot.providers.echo import NO_STRUCTURED_OUTPUT
from nanobot.request_rules import (
    JSON_SCHEMA_NAME,
    REFUSED_UNLESS,
    REFUSED_WHY,
    RESPONSE_FORMAT_TYPES,
    STRUCTURED_TYPES,
)

if TYPE_CHECKING:
    from nanobot.config import Config


def structured_output(config: Config) -> bool:
    """Whether the configured provider can answer a json_object/json_schema request (echo cannot)."""
    return config.agents.defaults.provider != "echo"


def _same(value: Any, allowed: Any) -> bool:
    # JSON's true is not 1, nor false 0 (Python's == says they are).
    return bool(value == allowed and (type(value) is bool) == (type(allowed) is bool))


def check_refused(body: dict[str, Any]) -> None:
    """400 naming the first field that asks for more than one text answer."""
    for name, allowed in REFUSED_UNLESS.items():
        value = body.get(name)
        if value is not None and not any(_same(value, a) for a in allowed):
            raise InvalidRequest(REFUSED_WHY[name], param=name, code="unsupported_parameter")


def check_response_format(value: Any, structured_output: bool) -> dict[str, Any] | None:
    """What to send the model: None for no format (omitted, null or ``text``), else the checked object."""
    if value is None:
        return None
    param = "response_format"
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMAT_TYPES:
        raise InvalidRequest(
            "response_format must be an object whose type is text, json_object or json_schema.",
            param=param,
        )
    kind = value["type"]
    if kind == "text":
        return None  # what every model does anyway: nothing to send
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequest(
                "A json_schema response_format needs a 'json_schema' object.", param=f"{param}.json_schema"
            )
        name = spec.get("name")
        if not isinstance(name, str) or not JSON_SCHEMA_NAME.fullmatch(name):
            raise InvalidRequest(
                "response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'.",
                param=f"{param}.json_schema.name",
            )
        if "schema" in spec and not isinstance(spec["schema"], dict | None):
            raise InvalidRequest(
                "response_format.json_schema.schema must be an object.", param=f"{param}.json_schema.schema"
            )
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidRequest(
                "response_format.json_schema.strict must be a boolean.", param=f"{param}.json_schema.strict"
            )
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise InvalidRequest(
                "response_format.json_schema.description must be a string.", param=f"{param}.json_schema.description"
            )
    assert kind in STRUCTURED_TYPES
    if not structured_output:
        raise InvalidRequest(NO_STRUCTURED_OUTPUT, param=param, code="unsupported_parameter")
    return value
