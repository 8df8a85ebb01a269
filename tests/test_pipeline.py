"""The pipeline's start-up check of stage contracts (``requires`` / ``provides``)."""

from __future__ import annotations

import pytest

from nanobot.config import DEFAULT_STAGES, ConfigError
from nanobot.pipeline import Pipeline, load_stage


class Declared:
    def __init__(self, name: str, requires: tuple[str, ...] = (), provides: tuple[str, ...] = ()) -> None:
        self.name, self.requires, self.provides = name, requires, provides

    async def __call__(self, ctx: object) -> None:
        return None


class Undeclared:
    name = "plain"

    async def __call__(self, ctx: object) -> None:
        return None


def builtins(*names: str) -> list:
    return [load_stage(n) for n in names]


def test_the_default_order_passes_and_every_builtin_declares():
    pipeline = Pipeline.from_names(list(DEFAULT_STAGES))
    assert all(s.requires and s.provides for s in pipeline.stages)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "names, message",
    [
        (["validate", "decode"], "stage 'validate' reads 'payload', which no earlier stage writes (decode writes it)"),
        (["decode", "validate", "run_agent"], "stage 'run_agent' reads 'session_key'"),
        (["decode", "validate", "resolve_session", "run_agent"], "run_agent' reads 'attachments'"),
        (["encode"], "stage 'encode' reads 'events', which no earlier stage writes (no stage in the list writes it)"),
    ],
)
def test_a_misordered_builtin_pipeline_is_refused(names, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Pipeline.from_names(names)


def test_handler_fields_are_there_from_the_start():
    Pipeline([Declared("early", requires=("headers", "body", "deadline", "exit_stack", "extras"))])


def test_a_custom_stage_declares_its_own_contract():
    writer = Declared("tagger", provides=("extras",))
    reader = Declared("gate", requires=("session_key",))
    Pipeline([*builtins("decode", "validate", "extract_files", "resolve_session"), reader, writer])
    with pytest.raises(ConfigError, match="stage 'gate' reads 'session_key'.*resolve_session writes it"):
        Pipeline([*builtins("decode", "validate"), reader, *builtins("extract_files", "resolve_session")])


def test_a_custom_stage_may_provide_what_a_builtin_reads():
    # A replacement for decode + validate: what it declares is what counts.
    own = Declared(
        "own_input",
        provides=("text", "files", "model", "stream", "include_usage", "include_tool_events")
        + ("session_id", "instructions", "client_history", "response_format"),
    )
    Pipeline([own, *builtins("extract_files", "resolve_session", "run_agent", "encode")])


def test_an_undeclared_custom_stage_is_accepted_anywhere():
    Pipeline([Undeclared(), *builtins(*DEFAULT_STAGES), Undeclared()])


@pytest.mark.parametrize(
    "stage, message",
    [
        (
            Declared("typo", requires=("sesion_key",)),
            "stage 'typo' requires 'sesion_key', which is not a context field",
        ),
        (Declared("typo", provides=("evnts",)), "stage 'typo' provides 'evnts', which is not a context field"),
        (Declared("bare", requires="text"), "stage 'bare': requires must be a tuple"),  # type: ignore[arg-type]
    ],
)
def test_bad_declarations_are_config_errors(stage, message):
    with pytest.raises(ConfigError, match=message):
        Pipeline([stage])


def test_the_responses_pipeline_is_the_configured_one_with_its_wire_format():
    names = ["decode", "validate", "extract_files", "resolve_session", "custom_stages:stamp", "run_agent", "encode"]
    stages = [s.name for s in Pipeline.for_responses(names).stages]
    assert stages == [
        "decode",
        "responses_validate",
        "extract_files",
        "resolve_session",
        load_stage("custom_stages:stamp").name,
        "run_agent",
        "responses_encode",
    ]
    # A pipeline without validate cannot serve the route: refused at start-up, saying which pipeline.
    with pytest.raises(ConfigError, match="resolve_session' reads 'session_id'.*/v1/responses pipeline"):
        Pipeline.for_responses(["decode", "extract_files", "resolve_session", "run_agent", "encode"])
