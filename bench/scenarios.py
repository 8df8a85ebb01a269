"""The benchmark scenarios and how the command-line options size them.

A scenario says what load to offer (kind, concurrency, duration or count)
and how the scripted upstream must answer (`tokens` words, `interval_ms`
apart; 0 tokens = an instant `You said: ...`). The runner starts a fresh
upstream per scenario with those settings.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

DEFAULT_DURATION = 10.0
QUICK_DURATION = 1.5


@dataclass
class Scenario:
    name: str
    kind: str  # chat | upload | noop | tools
    description: str
    stream: bool = False
    clients: int = 1
    duration: float = 0.0  # closed loop for this long; 0: one request per client
    requests: int | None = None  # total cap across clients
    tokens: int = 0
    interval_ms: float = 0.0
    rounds: int = 1  # noop: alternating default/no-op rounds
    noop_stages: int = 10
    probe_hz: float = 50.0  # upload: /health probe rate
    upload_bytes: int = 0
    targets: tuple[str, ...] = ("direct", "server", "peer")
    extra: dict[str, object] = field(default_factory=dict)

    def spec(self) -> dict[str, object]:
        """The settings that shaped the run (for the JSON report)."""
        out: dict[str, object] = {
            "kind": self.kind,
            "stream": self.stream,
            "clients": self.clients,
            "duration": self.duration,
            "requests": self.requests,
            "tokens": self.tokens,
            "interval_ms": self.interval_ms,
        }
        if self.kind == "noop":
            out.update(rounds=self.rounds, noop_stages=self.noop_stages)
        if self.kind == "tools":
            out.update(rounds=self.rounds)
        if self.kind == "upload":
            out.update(upload_bytes=self.upload_bytes, probe_hz=self.probe_hz)
        return out


ALL = (
    "nonstream-c1",
    "nonstream-c32",
    "stream-s100",
    "stream-s500",
    "stream-s2000",
    "uploads",
    "noop-stage",
    "client-tools",
)
ALIASES = {"health-under-uploads": "uploads", "noop": "noop-stage"}


def build(args: argparse.Namespace) -> list[Scenario]:
    """The selected scenarios, sized for `--quick` or the full run, then overridden."""
    quick: bool = args.quick
    base = QUICK_DURATION if quick else DEFAULT_DURATION
    duration = args.duration if args.duration is not None else base
    requests = args.requests
    nonstream_duration = 3600.0 if requests else duration
    # noop-stage: many short paired rounds beat a few long ones on a noisy machine.
    noop_duration = nonstream_duration if requests or args.duration is not None else (base if quick else 4.0)

    def streams(full: int, small: int) -> int:
        return args.streams or (small if quick else full)

    table = {
        "nonstream-c1": Scenario(
            "nonstream-c1",
            "chat",
            "non-streaming, 1 client",
            clients=1,
            duration=nonstream_duration,
            requests=requests,
        ),
        "nonstream-c32": Scenario(
            "nonstream-c32",
            "chat",
            "non-streaming, 32 clients (one session each)",
            clients=32,
            duration=nonstream_duration,
            requests=requests,
        ),
        "stream-s100": Scenario(
            "stream-s100",
            "chat",
            "100 streams back to back, 100 tokens @ 20 ms",
            stream=True,
            clients=streams(100, 50),
            duration=0.0 if quick and args.duration is None else duration,
            tokens=100,
            interval_ms=20,
        ),
        "stream-s500": Scenario(
            "stream-s500",
            "chat",
            "500 streams started together, 50 tokens @ 50 ms",
            stream=True,
            clients=streams(500, 100),
            tokens=50,
            interval_ms=50,
        ),
        "stream-s2000": Scenario(
            "stream-s2000",
            "chat",
            "2000 streams started together, 20 tokens @ 100 ms",
            stream=True,
            clients=streams(2000, 200),
            tokens=20,
            interval_ms=100,
        ),
        "uploads": Scenario(
            "uploads",
            "upload",
            "concurrent ~10 MB multipart PDF uploads + /health probe",
            clients=args.uploads or (4 if quick else 20),
            upload_bytes=args.upload_bytes,
            tokens=5,  # a short reply: the default would echo the whole extracted text back
            probe_hz=args.probe_hz,
            targets=("server", "peer"),
        ),
        "noop-stage": Scenario(
            "noop-stage",
            "noop",
            f"non-streaming C=32: default pipeline vs +{args.noop_stages} no-op stages",
            clients=32,
            duration=noop_duration,
            requests=requests,
            rounds=args.rounds or (1 if quick else 8),
            noop_stages=args.noop_stages,
            targets=("server",),
        ),
        "client-tools": Scenario(
            "client-tools",
            "tools",
            "non-streaming C=32, one server: plain turns vs turns offering 3 client tools (none called)",
            clients=32,
            duration=noop_duration,
            requests=requests,
            rounds=args.rounds or (1 if quick else 8),
            targets=("server",),
        ),
    }
    names = [ALIASES.get(n.strip(), n.strip()) for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(ALL)})")
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return [table[n] for n in seen]
