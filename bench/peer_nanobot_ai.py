"""Start the original implementation, PyPI's `nanobot-ai` 0.3.5, as the bench's peer.

It is installed in a virtualenv of its own, outside this repository (its
package is also called `nanobot`), with the extra its API server needs:

    python3 -m venv ../nanobot-ai-0.3.5
    ../nanobot-ai-0.3.5/bin/pip install 'nanobot-ai[api]==0.3.5'   # [api]: aiohttp

then measured side by side with this server:

    python -m bench --targets server,peer --peer-model scripted --peer-cmd \\
      'python -m bench.peer_nanobot_ai --venv ../nanobot-ai-0.3.5 --port {port} --upstream-base {upstream_base}'

The launcher writes the peer's config into a fresh temporary directory (its
HOME, config file and workspace; the process is replaced, so the next launch
removes those whose server has exited) with
the `custom` provider pointed at the scripted upstream and the model named
`--model`, then execs the venv's `nanobot serve`, so the PID the harness
measures is the server's own. The original answers every request in one
persistent session (`api:default`) under one lock, with its default tools
offered to the model, as shipped; nothing is turned off, since plain turns
need no change. PYTHONPATH is dropped: the harness points it at this checkout,
whose `nanobot` package would shadow the original's. Proxy variables are
dropped too: the upstream is on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

_PREFIX = "bench-peer-nanobot-ai-"
# The harness's environment, not the peer's: this checkout on the import path, and proxies.
_DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "http_proxy", "https_proxy", "all_proxy")


def peer_config(port: int, upstream_base: str, model: str, workspace: Path) -> dict[str, Any]:
    """The original's config.json (camelCase keys, as its schema reads them)."""
    return {
        "agents": {
            "defaults": {
                "workspace": str(workspace),
                "model": model,
                "provider": "custom",
                "timezone": "UTC",  # a fixed zone: no detection at startup
            }
        },
        "providers": {"custom": {"apiKey": "scripted", "apiBase": upstream_base}},
        "api": {"host": "127.0.0.1", "port": port},
    }


def write_config(root: Path, port: int, upstream_base: str, model: str) -> Path:
    """Write HOME/.nanobot/config.json under `root`, with the workspace beside it; its path."""
    home = root / "home"
    workspace = home / ".nanobot" / "workspace"
    workspace.mkdir(parents=True)
    path = home / ".nanobot" / "config.json"
    path.write_text(json.dumps(peer_config(port, upstream_base, model, workspace), indent=2) + "\n")
    return path


def venv_problem(venv: Path) -> str | None:
    """Why `venv` cannot serve the original's API, or None."""
    if not os.access(venv / "bin" / "nanobot", os.X_OK):
        return f"{venv}/bin/nanobot not found: create the venv with `pip install 'nanobot-ai[api]==0.3.5'`"
    if not any(venv.glob("lib/python*/site-packages/aiohttp")):
        return f"aiohttp is missing in {venv}: install `nanobot-ai[api]==0.3.5` there"
    return None


def sweep_stale(parent: Path) -> None:
    """Remove the temporary directories of earlier peers whose server is gone."""
    for old in parent.glob(_PREFIX + "*"):
        try:
            os.kill(int((old / "pid").read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (OSError, ValueError):
            pass  # another user's, or one being written


def peer_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV and k.upper() not in _DROPPED_ENV}
    env["HOME"] = str(home)
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peer_nanobot_ai", description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, required=True, help="the virtualenv holding nanobot-ai[api]==0.3.5")
    p.add_argument("--port", type=int, required=True, help="port the peer listens on (127.0.0.1)")
    p.add_argument("--upstream-base", required=True, help="the scripted upstream's base URL, ending in /v1")
    p.add_argument("--model", default="scripted", help="model name: the one the bench asks for (--peer-model)")
    args = p.parse_args(argv)
    venv = args.venv.expanduser().absolute()
    problem = venv_problem(venv)
    if problem:
        print(f"peer_nanobot_ai: {problem}", file=sys.stderr)
        return 2
    sweep_stale(Path(tempfile.gettempdir()))
    root = Path(tempfile.mkdtemp(prefix=_PREFIX))
    (root / "pid").write_text(str(os.getpid()))  # exec keeps the pid: the server's
    config = write_config(root, args.port, args.upstream_base, args.model)
    home = config.parent.parent
    os.chdir(root)
    server = str(venv / "bin" / "nanobot")
    argv_out = [server, "serve", "--config", str(config), "--port", str(args.port), "--host", "127.0.0.1"]
    sys.stdout.flush()
    os.execve(server, argv_out, peer_env(home))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
