"""vLLM's own start-up log (`vllm serve` output): how far the server got, for progress lines.

Loading a large model takes 10+ minutes; the last log line alone ("Maximum concurrency for
...") says little. The messages read here are vLLM's (the format strings in
`model_executor/model_loader/default_loader.py` "Loading weights took", `v1/worker/
gpu_model_runner.py` "Model loading took" / "Graph capturing finished", `v1/worker/
gpu_worker.py` "Available KV cache memory", `v1/engine/core.py` "init engine (...) took",
`entrypoints/openai/api_server.py` "Starting vLLM API server N on URL", in 2026 "Starting
vLLM server on URL") and uvicorn's "Application startup complete.", which vLLM's API server
prints once it accepts requests. A rank of vLLM's own multi-node executor (`--nnodes`) says
where it joins (`vllm/entrypoints/cli/serve.py` run_headless: "Launching vLLM (vX)
headless multiproc executor, with head node address H:P ..."; `vllm/distributed/
parallel_state.py` init_distributed_environment: "... distributed_init_method=tcp://H:P
backend=nccl"; a data-parallel replica: "Launching N data parallel engine(s) in headless
mode, with head node address tcp://H:P.") and that every rank joined
(initialize_model_parallel: "rank R in world size W is assigned as DP rank ..., PP rank ...,
TP rank ...", logged once the process group formed). Lines may carry a process prefix
(`(EngineCore_DP0 pid=1)`, `(Worker pid=7)`), a docker compose prefix or terminal colour
codes (raw, or in caret notation `^[[0;36m`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dgxcluster.facts import ParseError

COMMAND = "vLLM log"
#: Start-up phases in the order vLLM goes through them.
PHASES = ("starting", "connecting", "joined", "loading", "compiling", "kv-cache", "cuda-graphs",
          "engine-ready", "api-starting", "ready")
#: What `grep` looks for to tell that a rank joined the process group (the "joined" rule).
JOINED_GREP = "in world size [0-9]* is assigned as"
_ANSI = re.compile(r"(?:\x1b|\^\[)\[[0-9;]*m")
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("failed", re.compile(r"Traceback \(most recent call last\)|Engine core initialization failed"
                          r"|^\s*(?:RuntimeError|ValueError|torch\.OutOfMemoryError|"
                          r"torch\.cuda\.OutOfMemoryError|torch\.distributed\.\w+Error)\b")),
    ("ready", re.compile(r"Application startup complete\.")),
    ("api-starting", re.compile(r"Starting vLLM (?:API )?server (?:\d+ )?on (?P<url>\S+)")),
    ("engine-ready", re.compile(r"init engine \(profile, create kv cache, warmup model\) took "
                                r"(?P<s>[\d.]+) seconds")),
    ("cuda-graphs", re.compile(r"Capturing CUDA graphs \((?P<what>[^)]*)\):\s*(?P<pct>\d+)%"
                               r"|Graph capturing finished in (?P<s>[\d.]+) secs")),
    ("kv-cache", re.compile(r"Available KV cache memory: (?P<gib>[\d.]+) GiB"
                            r"|GPU KV cache size: (?P<tokens>[\d,]+) tokens")),
    ("compiling", re.compile(r"torch\.compile takes (?P<s>[\d.]+) s in total"
                             r"|Dynamo bytecode transform time")),
    ("loading", re.compile(r"Loading safetensors checkpoint shards:\s*(?P<pct>\d+)% Completed \| "
                           r"(?P<done>\d+)/(?P<total>\d+)|Loading weights took (?P<s>[\d.]+) seconds"
                           r"|Model loading took (?P<gib>[\d.]+) GiB|Starting to load model")),
    ("joined", re.compile(r"\brank (?P<rank>\d+) in world size (?P<world>\d+) is assigned as")),
    ("connecting", re.compile(r"headless multiproc executor, with head node address (?P<addr>\S+?)"
                              r"(?: for|,|$)|distributed_init_method=tcp://(?P<init>\S+)"
                              r"|data parallel engine\(s\) in headless mode, with head node "
                              r"address (?P<dp>\S+?)\.?$")),
    ("starting", re.compile(r"Initializing a V\d LLM engine|non-default args:|vLLM API server version")),
]


@dataclass(frozen=True)
class Progress:
    phase: str  # one of PHASES, or "failed"
    detail: str  # the evidence, for a progress line
    url: str | None = None  # the API address vLLM announced

    @property
    def ready(self) -> bool:
        return self.phase == "ready"


def _detail(phase: str, m: re.Match[str]) -> str:
    g = {k: v for k, v in m.groupdict().items() if v}
    if phase == "loading" and "done" in g:
        return f"loading weights ({g['done']}/{g['total']} shards)"
    if phase == "loading" and "s" in g:
        return f"weights loaded in {g['s']} s"
    if phase == "loading" and "gib" in g:
        return f"model loaded ({g['gib']} GiB)"
    if phase == "kv-cache" and "gib" in g:
        return f"KV cache: {g['gib']} GiB"
    if phase == "kv-cache":
        return f"KV cache: {g['tokens']} tokens"
    if phase == "cuda-graphs" and "what" in g:
        return f"capturing CUDA graphs ({g['what']}, {g['pct']}%)"
    if phase == "engine-ready":
        return f"engine initialised in {g['s']} s"
    if phase == "joined":
        return f"joined: rank {g['rank']} of {g['world']}"
    if phase == "connecting":
        return (f"replica joining the head's data-parallel front end at {g['dp']}" if "dp" in g
                else f"joining the process group at {g.get('addr') or g['init']}")
    if phase == "api-starting":
        return f"API server starting on {g['url']}"
    if phase == "ready":
        return "API server up (Application startup complete)"
    return {"cuda-graphs": "CUDA graphs captured", "compiling": "torch.compile",
            "starting": "engine starting", "failed": m.group(0).strip()}.get(phase, phase)


def read_line(line: str) -> Progress | None:
    """The phase one log line shows, if any."""
    text = _ANSI.sub("", line)
    for phase, rule in _RULES:
        if m := rule.search(text):
            url = m.groupdict().get("url")
            return Progress(phase, _detail(phase, m), url)
    return None


def parse(text: str) -> Progress:
    """How far the log got: the last phase its lines show (a failure is final; the API URL is
    kept once announced). Raises ParseError when no line is vLLM's."""
    got: Progress | None = None
    url: str | None = None
    for line in text.splitlines():
        p = read_line(line)
        if p is None:
            continue
        url = p.url or url
        if got is None or got.phase != "failed":
            got = Progress(p.phase, p.detail, url)
    if got is None:
        raise ParseError(COMMAND, "no vLLM start-up line", text)
    return Progress(got.phase, got.detail, url)
