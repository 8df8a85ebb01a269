"""Tool arguments checked against the tool's schema before the call.

Only the subset the built-in schemas use: ``required``, the JSON type of each
declared property, and no unknown keys when ``additionalProperties`` is false.
A checker is compiled once when a tool is registered, not per call. MCP
servers' schemas may use much more of JSON Schema, and their servers coerce
what their schema allows (``"2"`` for an integer, with pydantic): for those
(``loose``) nothing past "the arguments are an object" is checked here, so a
call the server would take is never refused; the server checks the rest and
its refusal is an error result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TYPES: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    # bool is an int in Python, not in JSON
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}

_ARTICLE = {"integer": "an integer", "array": "an array", "object": "an object", "null": "null"}


def _named(kind: str) -> str:
    return _ARTICLE.get(kind, f"a {kind}")


@dataclass(frozen=True)
class ArgsChecker:
    """The compiled checks of one tool's ``parameters`` schema."""

    required: tuple[str, ...]
    types: dict[str, tuple[str, ...]]  # property -> allowed JSON types (known ones only)
    closed: bool  # additionalProperties is false

    def check(self, args: dict[str, Any]) -> str | None:
        """``None`` when ``args`` fit, else the ``Error: ...`` text naming the bad argument."""
        for key in self.required:
            if key not in args:
                return f"Error: argument '{key}' is required."
        for key, value in args.items():
            kinds = self.types.get(key)
            if kinds is None:
                if self.closed:
                    allowed = ", ".join(f"'{k}'" for k in self.types) or "none"
                    return f"Error: unknown argument '{key}' (allowed: {allowed})."
                continue
            # An optional argument sent as null counts as left out: models often
            # send it that way, and the tools treat a missing one the same.
            if value is None and key not in self.required:
                continue
            if not kinds or any(_TYPES[k](value) for k in kinds):
                continue
            return f"Error: argument '{key}' must be {' or '.join(_named(k) for k in kinds)}."
        return None


def compile_checker(schema: dict[str, Any], *, loose: bool = False) -> ArgsChecker:
    """The checker of an OpenAI ``tools`` entry's ``function.parameters`` (``loose``: checks nothing)."""
    if loose:
        return ArgsChecker((), {}, False)
    fn = schema.get("function")
    params = fn.get("parameters") if isinstance(fn, dict) else None
    if not isinstance(params, dict):
        params = {}
    props = params.get("properties")
    props = props if isinstance(props, dict) else {}
    types: dict[str, tuple[str, ...]] = {}
    for key, prop in props.items():
        declared = prop.get("type") if isinstance(prop, dict) else None
        listed = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
        kinds = tuple(k for k in listed if isinstance(k, str) and k in _TYPES)
        # a type this checker does not know: accept anything rather than refuse a valid call
        types[str(key)] = kinds if len(kinds) == len(listed) else ()
    required = params.get("required")
    req = tuple(str(k) for k in required) if isinstance(required, list) else ()
    closed = params.get("additionalProperties") is False
    return ArgsChecker(req, types, closed)
