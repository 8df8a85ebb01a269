"""Typed configuration: camelCase JSON/YAML on disk, dataclasses in code.

Loading is strict on purpose: an unknown key or a value of the wrong type is a
:class:`ConfigError` naming the key path (``api.port: expected integer``), so a
typo never silently falls back to a default. ``${VAR}`` in any string is
replaced from the environment before the values are checked.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from nanobot.files.limits import FileLimits
from nanobot.url_mask import public_url, strip_userinfo

# The allowed values of the choice keys: the loader checks a value against the
# Literal (``api.clientHistory: expected one of 'reject', 'ignore', 'use'``).
ClientHistory = Literal["reject", "ignore", "use"]
ClientSystem = Literal["append", "ignore", "reject"]
WorkspaceScope = Literal["shared", "session"]
Sandbox = Literal["bwrap", "none"]
SearchProvider = Literal["", "brave", "searxng"]


class ConfigError(Exception):
    """A user mistake in the configuration; the CLI prints it and exits 2."""


@dataclass
class AgentDefaults:
    provider: str = "echo"
    model: str = "echo"
    workspace: str = "~/.nanobot/workspace"
    state_dir: str | None = None  # None: <workspace>.state (database, uploads, locks)
    system_prompt: str | None = None
    max_tokens: int = 4096
    temperature: float = 0.1
    max_tool_iterations: int = 20
    max_history_messages: int = 50
    # Characters of earlier messages sent at most (200k: about 50k tokens);
    # the stored history keeps everything.
    max_history_chars: int = 200_000


@dataclass
class AgentsConfig:
    defaults: AgentDefaults = field(default_factory=AgentDefaults)


@dataclass
class ProviderConfig:
    api_key: str = ""
    api_base: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0
    max_retries: int = 2


@dataclass
class FilesConfig:
    """Bounds on what one uploaded document may cost to read.

    The defaults are the extractor's own (:class:`FileLimits`), stated once.
    """

    max_chars: int = FileLimits.max_chars
    max_pages: int = FileLimits.max_pages
    max_zip_members: int = FileLimits.max_zip_members
    max_uncompressed_bytes: int = FileLimits.max_uncompressed_bytes
    max_compression_ratio: float = FileLimits.max_compression_ratio
    max_xlsx_cells: int = FileLimits.max_xlsx_cells
    timeout: float = FileLimits.timeout_seconds
    workers: int = FileLimits.workers
    retention_days: float = 30.0  # uploads older than this are removed (0: kept)

    def limits(self) -> FileLimits:
        return FileLimits(
            max_chars=self.max_chars,
            max_pages=self.max_pages,
            max_zip_members=self.max_zip_members,
            max_uncompressed_bytes=self.max_uncompressed_bytes,
            max_compression_ratio=self.max_compression_ratio,
            max_xlsx_cells=self.max_xlsx_cells,
            timeout_seconds=self.timeout,
            workers=self.workers,
        )


@dataclass
class ResponsesConfig:
    """The Responses API (``/v1/responses``): how long stored responses are kept."""

    retention_days: float = 30.0  # stored responses older than this are removed (0: kept)


@dataclass
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8900
    api_key: str = ""
    timeout: float = 120.0
    max_file_bytes: int = 10 * 1024 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    cors_origins: list[str] = field(default_factory=list)
    max_concurrent_requests: int = 1000  # counted once a request's body is in
    max_body_bytes_in_flight: int = 256 * 1024 * 1024  # bodies still arriving, all together
    client_history: ClientHistory = "reject"
    client_system: ClientSystem = "append"
    allowed_hosts: list[str] = field(default_factory=list)  # Host values served without an apiKey
    ping_interval: float = 15.0
    header_timeout: float = 15.0  # request line + headers, and idle keep-alive
    body_timeout: float = 60.0  # the whole request body
    shutdown_grace: float = 10.0  # SIGTERM: how long in-flight requests may finish
    workers: int = 1  # serving processes sharing the port
    history_cache_bytes: int = 64 * 1024 * 1024  # recent sessions' history kept in memory (0: none)
    files: FilesConfig = field(default_factory=FilesConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)


@dataclass
class TelegramConfig:
    enabled: bool = False
    token: str = ""
    api_base: str = "https://api.telegram.org"
    allowed_chat_ids: list[str] = field(default_factory=list)  # message tool targets; "*": any


@dataclass
class WebhookConfig:
    enabled: bool = False
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    allowed_chat_ids: list[str] = field(default_factory=list)  # message tool targets; "*": any


@dataclass
class ChannelsConfig:
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)


@dataclass
class FileToolConfig:
    enabled: bool = True
    context_writable: bool = False  # AGENTS.md, USER.md, skills/, the root's memory/MEMORY.md


@dataclass
class ExecToolConfig:
    enabled: bool = False
    sandbox: Sandbox = "bwrap"
    network: bool = False
    timeout: float = 60.0
    # Per command (0: no limit). Memory is address space, so it is set above
    # what runtimes reserve without using; processes count threads too.
    max_memory_mb: int = 512
    max_processes: int = 128
    max_file_mb: int = 256
    cpu_seconds: int = 60
    tmp_size_mb: int = 64  # the private /tmp (RAM)
    max_per_session: int = 4  # commands of one session at once (16 server-wide)


@dataclass
class WebFetchConfig:
    enabled: bool = True
    max_bytes: int = 2 * 1024 * 1024
    timeout: float = 20.0


@dataclass
class WebSearchConfig:
    provider: SearchProvider = ""
    api_key: str = ""
    api_base: str | None = None
    max_results: int = 5


@dataclass
class WebToolsConfig:
    fetch: WebFetchConfig = field(default_factory=WebFetchConfig)
    search: WebSearchConfig = field(default_factory=WebSearchConfig)


@dataclass
class McpServerConfig:
    command: str = ""  # a stdio server ...
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None  # ... or a streamable HTTP one
    headers: dict[str, str] = field(default_factory=dict)
    tool_timeout: float = 30.0
    enabled_tools: list[str] = field(default_factory=lambda: ["*"])


@dataclass
class CronToolConfig:
    enabled: bool = True
    max_jobs_per_session: int = 20
    min_interval_seconds: float = 60.0  # every_seconds, and the gaps of a cron expression


@dataclass
class SpawnToolConfig:
    enabled: bool = True
    max_concurrent: int = 4  # subagents running at once in one server process
    timeout: float = 600.0  # seconds per subagent (api.timeout does not apply)


@dataclass
class ToolsConfig:
    restrict_to_workspace: bool = True
    workspace_scope: WorkspaceScope = "shared"
    timeout: float = 60.0
    max_result_chars: int = 16000
    workspace_quota_mb: int = 1024  # bytes one turn's folder may hold (0: no quota)
    file: FileToolConfig = field(default_factory=FileToolConfig)
    exec: ExecToolConfig = field(default_factory=ExecToolConfig)
    web: WebToolsConfig = field(default_factory=WebToolsConfig)
    cron: CronToolConfig = field(default_factory=CronToolConfig)
    spawn: SpawnToolConfig = field(default_factory=SpawnToolConfig)
    ssrf_whitelist: list[str] = field(default_factory=list)
    require_user_request: list[str] = field(default_factory=list)  # tools offered only when the user asks
    mcp_servers: dict[str, McpServerConfig] = field(default_factory=dict)


@dataclass
class DatabaseConfig:
    url: str | None = None  # None: SQLite at <stateDir>/nanobot.db
    pool_size: int = 10


# The built-in stages (modules of ``stages/``) in their one working order:
# the default pipeline, and the names ``pipeline.stages`` may use bare.
DEFAULT_STAGES = ("decode", "validate", "extract_files", "resolve_session", "run_agent", "encode")


@dataclass
class PipelineConfig:
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))


@dataclass
class Config:
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    api: ApiConfig = field(default_factory=ApiConfig)
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)

    @property
    def workspace(self) -> Path:
        return Path(self.agents.defaults.workspace).expanduser()

    @property
    def state_dir(self) -> Path:
        """The server's own files, out of the agent's reach (``agents.defaults.stateDir``)."""
        configured = self.agents.defaults.state_dir
        if configured:
            return Path(configured).expanduser()
        workspace = Path(os.path.abspath(self.workspace))  # "." has no name to extend
        return workspace.with_name(workspace.name + ".state")

    def check(self) -> None:
        """Cross-field rules that a type check cannot express."""
        d = self.agents.defaults
        if d.provider != "echo" and d.provider not in self.providers:
            known = ", ".join(["echo", *self.providers]) or "echo"
            raise ConfigError(f"agents.defaults.provider: unknown provider {d.provider!r} (known: {known})")
        workspace, state = (Path(os.path.abspath(p)) for p in (self.workspace, self.state_dir))
        if state == workspace or workspace in state.parents or state in workspace.parents:
            raise ConfigError(
                "agents.defaults.stateDir: must be outside the workspace (and not contain it): "
                "the agent's tools can write anywhere in the workspace"
            )
        if self.api.workers > 1 and not hasattr(os, "fork"):
            raise ConfigError("api.workers: more than one worker needs a POSIX system (fork)")
        if not 0 <= self.api.port <= 65535:
            raise ConfigError("api.port: must be between 0 and 65535")
        api, files = self.api, self.api.files
        positive: dict[str, float] = {
            "api.timeout": api.timeout,
            "api.headerTimeout": api.header_timeout,
            "api.bodyTimeout": api.body_timeout,
            "api.maxConcurrentRequests": api.max_concurrent_requests,
            "api.workers": api.workers,
            "api.files.timeout": files.timeout,
            "api.files.workers": files.workers,
            "agents.defaults.maxToolIterations": d.max_tool_iterations,
            "tools.cron.maxJobsPerSession": self.tools.cron.max_jobs_per_session,
            "tools.cron.minIntervalSeconds": self.tools.cron.min_interval_seconds,
            "tools.spawn.maxConcurrent": self.tools.spawn.max_concurrent,
            "tools.spawn.timeout": self.tools.spawn.timeout,
        }
        for path, amount in positive.items():
            if amount <= 0:
                raise ConfigError(f"{path}: must be positive")
        if files.retention_days < 0:
            raise ConfigError("api.files.retentionDays: must not be negative (0 keeps uploads)")
        if api.responses.retention_days < 0:
            raise ConfigError("api.responses.retentionDays: must not be negative (0 keeps responses)")
        if api.history_cache_bytes < 0:
            raise ConfigError("api.historyCacheBytes: must not be negative")
        if api.max_body_bytes_in_flight < api.max_body_bytes:
            raise ConfigError("api.maxBodyBytesInFlight: must be at least api.maxBodyBytes")
        for cidr in self.tools.ssrf_whitelist:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"tools.ssrfWhitelist: {cidr!r} is not a CIDR (e.g. 10.0.0.0/8)") from None
        ex = self.tools.exec
        not_negative = {
            "tools.workspaceQuotaMb": self.tools.workspace_quota_mb,
            "tools.exec.maxMemoryMb": ex.max_memory_mb,
            "tools.exec.maxProcesses": ex.max_processes,
            "tools.exec.maxFileMb": ex.max_file_mb,
            "tools.exec.cpuSeconds": ex.cpu_seconds,
            "tools.exec.tmpSizeMb": ex.tmp_size_mb,
        }
        for path, amount in not_negative.items():
            if amount < 0:
                raise ConfigError(f"{path}: must not be negative (0: no limit)")
        if ex.max_per_session < 1:
            raise ConfigError("tools.exec.maxPerSession: must be positive")
        if d.max_history_messages < 0:
            raise ConfigError("agents.defaults.maxHistoryMessages: must not be negative")
        if d.max_history_chars < 0:
            raise ConfigError("agents.defaults.maxHistoryChars: must not be negative")


# --- loading -----------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _interpolate(value: Any, path: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            try:
                return os.environ[m.group(1)]
            except KeyError:
                raise ConfigError(f"{path}: environment variable {m.group(1)} is not set") from None

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, _join(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        # A JSON true must not pass as 1, nor 1 as True.
        if any(type(value) is type(a) and value == a for a in allowed):
            return value
        raise ConfigError(f"{path}: expected one of {', '.join(map(repr, allowed))}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path or 'config'}: expected object")
        return _build(tp, value, path)
    if origin is dict:
        _, vtype = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected object")
        return {str(k): _convert(vtype, v, _join(path, k)) for k, v in value.items()}
    if origin is list:
        (itype,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected array")
        return [_convert(itype, v, f"{path}[{i}]") for i, v in enumerate(value)]
    # bool is an int subclass in Python; a JSON true is never a port number.
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ConfigError(f"{path}: expected {_TYPE_NAMES.get(tp, tp)}")


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {_camel(f.name): f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{_join(path, key)}: unknown key")
        name = fields[key]
        kwargs[name] = _convert(hints[name], value, _join(path, key))
    return cls(**kwargs)


def parse_config(data: Any) -> Config:
    """Build a checked :class:`Config` from already-parsed JSON/YAML data."""
    if data is None:
        data = {}
    config: Config = _convert(Config, _interpolate(data, ""), "")
    config.check()
    return config


def find_config_path(explicit: str | None = None) -> Path | None:
    """The first of ``--config``, ``$NANOBOT_CONFIG``, ./config.json, ~/.nanobot/config.json."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("NANOBOT_CONFIG")
    if env:
        return Path(env)
    for candidate in (Path("config.json"), Path("~/.nanobot/config.json").expanduser()):
        if candidate.is_file():
            return candidate
    return None


def load_config(explicit: str | None = None) -> Config:
    """Load and check the configuration; no file found means all defaults."""
    path = find_config_path(explicit)
    if path is None:
        return parse_config({})
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    yaml_file = path.suffix in (".yaml", ".yml")
    try:
        data = _yaml(text) if yaml_file else json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid {'YAML' if yaml_file else 'JSON'}: {exc}") from None
    return parse_config(data)


def _yaml(text: str) -> Any:
    """A YAML config file's data; PyYAML's errors as ValueError. PyYAML is imported
    here, not at the top, so a server with a JSON config never loads it (1 MB)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def to_public_dict(config: Config) -> dict[str, Any]:
    """The resolved settings as camelCase data with secrets masked."""

    def walk(obj: Any, key: str = "") -> Any:
        if dataclasses.is_dataclass(obj):
            return {_camel(f.name): walk(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj)}
        if isinstance(obj, dict):
            return {k: ("***" if key in _SECRET_MAPS and v else walk(v, k)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if key in ("api_key", "token") and obj:
            return "***"
        if key in ("url", "api_base") and obj:
            return strip_userinfo(obj)
        return obj

    public: dict[str, Any] = walk(config)
    if config.channels.webhook.url:  # its path is as good as a token
        public["channels"]["webhook"]["url"] = public_url(config.channels.webhook.url) + "/***"
    return public


# Maps whose every value is a secret.
_SECRET_MAPS = ("headers", "extra_headers", "env")
