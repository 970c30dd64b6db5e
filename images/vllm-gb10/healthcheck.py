#!/usr/bin/env python3
"""Container health for what `dgxcluster start` really runs in this image (Docker: every 30 s).

What runs is read from the processes (their argv), never assumed:
- Ray executor: the container's command is `ray start --block --head ...` (head) or
  `ray start --block --address=HEAD:PORT ...` (worker); `start` later runs `vllm serve ...`
  in the head with `docker exec`. The entrypoint's own modes (`ray-head`, `ray-worker`,
  `serve`) count the same.
- Native executor (no Ray): the container's command is `vllm serve ...`; workers run it with
  `--headless` and serve no API.
Checks: a Ray head's GCS (`GET /api/gcs_healthz` on its dashboard port), a Ray worker's raylet
(`GET /api/local_raylet_healthz` on the dashboard agent's port), and every `vllm serve` API
(`GET /health` on its own `--port`: 200 healthy, 503 the engine died). A vLLM exec'd into a
Ray head that does not listen yet is loading (large models take 10+ minutes), not unhealthy;
a container whose own command is `vllm serve` must listen once Docker's start period is over.
Exit 0 healthy, 1 unhealthy (Docker's convention); the reason goes to stdout (docker inspect).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

Argv = list[str]
#: Defaults of `ray start` (--dashboard-port, --dashboard-agent-listen-port) and `vllm serve`.
RAY_DASHBOARD_PORT = "8265"
RAY_AGENT_PORT = "52365"
VLLM_API_PORT = "8000"
API_MODULES = ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.api_server")


def get(url: str) -> int | None:
    """HTTP status, None if nothing listens there, 0 for any other failure."""
    try:
        with urllib.request.urlopen(url, timeout=8) as r:  # noqa: S310 - fixed local URL
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return None if isinstance(reason, ConnectionRefusedError) else 0


def processes() -> dict[int, Argv]:
    """argv of every process in the container (its own PID namespace), by pid."""
    out: dict[int, Argv] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    raw = fh.read()
            except OSError:
                continue
            if raw:
                out[int(name)] = [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]
    return out


def option(argv: Argv, name: str, default: str) -> str:
    """`--name=V` or `--name V` from an argv (the last one wins, as argparse does)."""
    value = default
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            value = a.split("=", 1)[1]
        elif a == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _after(argv: Argv, word: str, then: str) -> bool:
    return any(os.path.basename(a) == word and argv[i + 1:i + 2] == [then]
               for i, a in enumerate(argv))


def role(argv: Argv) -> str:
    """What a command line runs: ray-head, ray-worker, vllm, vllm-headless or ''."""
    if _after(argv, "ray", "start"):
        return "ray-head" if "--head" in argv else "ray-worker"
    if _after(argv, "vllm", "serve") or any(m in argv for m in API_MODULES):
        return "vllm-headless" if "--headless" in argv else "vllm"
    for mode in ("ray-head", "ray-worker"):
        if mode in argv:
            return mode
    return "vllm" if "serve" in argv and any(a.endswith("dgxcluster-entrypoint") for a in argv) else ""


def check(procs: dict[int, Argv], fetch: Callable[[str], int | None] = get) -> tuple[bool, str]:
    main = role(procs.get(1, []))
    problems: list[str] = []
    seen: list[str] = [main] if main.startswith("ray") else []
    # The `ray start` process itself (exec'd by the entrypoint) carries the real ports.
    ray = next((a for a in procs.values() if _after(a, "ray", "start")), procs.get(1, []))
    if main == "ray-head":
        port = option(ray, "--dashboard-port", RAY_DASHBOARD_PORT)
        if fetch(f"http://127.0.0.1:{port}/api/gcs_healthz") != 200:
            problems.append(f"Ray head: GCS not healthy (dashboard port {port})")
    elif main == "ray-worker":
        port = option(ray, "--dashboard-agent-listen-port", RAY_AGENT_PORT)
        if fetch(f"http://127.0.0.1:{port}/api/local_raylet_healthz") != 200:
            problems.append(f"Ray worker: raylet not healthy (agent port {port})")
    servers = {(role(argv), option(argv, "--port", VLLM_API_PORT))
               for argv in procs.values() if role(argv).startswith("vllm")}
    for kind, port in sorted(servers):
        if kind == "vllm-headless":
            seen.append("vLLM headless worker")
            continue
        status = fetch(f"http://127.0.0.1:{port}/health")
        if status == 200:
            seen.append(f"vLLM API on {port}")
        elif status is None and not main.startswith("vllm"):
            seen.append(f"vLLM loading (port {port} not open yet)")
        elif status is None:
            problems.append(f"vLLM is not listening on {port}")
        else:
            problems.append(f"vLLM /health on {port} answered {status or 'nothing'}")
    if not seen and not problems:
        return True, "healthy (no Ray or vLLM server in this container)"
    return not problems, "; ".join(problems) or "healthy: " + ", ".join(dict.fromkeys(seen))


def main() -> int:
    ok, text = check(processes())
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
