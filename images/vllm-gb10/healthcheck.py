#!/usr/bin/env python3
"""Container health for every mode of the image (Docker runs it every 30 s).

- vLLM: GET /health on VLLM_PORT must answer 200 (503 means the engine died). Connection
  refused means vLLM is not started in this container (a Ray container before `serve`):
  not a failure, unless the container runs in `serve` mode.
- Ray: the head's GCS (dashboard /api/gcs_healthz) or a worker's raylet (dashboard agent
  /api/local_raylet_healthz) must answer 200.
Exit 0 healthy, 1 unhealthy (Docker's convention); the reason goes to stdout (docker inspect).
"""

import os
import sys
import urllib.error
import urllib.request


def get(url: str) -> int | None:
    """HTTP status, or None if nothing listens there."""
    try:
        with urllib.request.urlopen(url, timeout=8) as r:  # noqa: S310 - fixed local URL
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ConnectionRefusedError):
            return None
        return 0


def mode() -> str:
    try:
        with open("/proc/1/cmdline", "rb") as fh:
            args = fh.read().split(b"\0")
    except OSError:
        return ""
    for m in (b"ray-head", b"ray-worker", b"serve"):
        if m in args:
            return m.decode()
    return ""


def main() -> int:
    m = mode()
    problems = []
    vllm = get(f"http://127.0.0.1:{os.environ.get('VLLM_PORT', '8000')}/health")
    if vllm is not None and vllm != 200:
        problems.append(f"vLLM /health answered {vllm}")
    elif vllm is None and m == "serve":
        problems.append("vLLM is not listening")
    if m == "ray-head":
        port = os.environ.get("RAY_DASHBOARD_PORT", "8265")
        if get(f"http://127.0.0.1:{port}/api/gcs_healthz") != 200:
            problems.append("Ray head (GCS) is not healthy")
    elif m == "ray-worker":
        port = os.environ.get("RAY_DASHBOARD_AGENT_LISTEN_PORT", "52365")
        if get(f"http://127.0.0.1:{port}/api/local_raylet_healthz") != 200:
            problems.append("Ray worker (raylet) is not healthy")
    print("; ".join(problems) or f"healthy ({m or 'no server mode'})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
