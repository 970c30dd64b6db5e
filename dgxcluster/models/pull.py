"""`model pull`: download once, on the head, inside the cluster image; then sync to the peers.

`hf download` (huggingface_hub) runs in the image with the HF cache mounted exactly where
the serving containers mount it, so the files land where vLLM looks, as the operator's
login user (not root) so later copies can write beside them. HF_TOKEN reaches the
container only through a 0600 env-file (`docker run --env-file`), deleted afterwards; it
is never on a command line.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from dgxcluster.core import docker, imageid, naming
from dgxcluster.core.dockerrun import CONTAINER_HF_HOME, Run, docker_run
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.errors import StepError
from dgxcluster.models.agent import NodeModels
from dgxcluster.models.repoid import COMMIT_RE, RepoId
from dgxcluster.models.sync import SyncReport, sync
from dgxcluster.secrets import Secret, render_env_file

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import ContainerSettings

STEP = "model-pull"
TOKEN_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass
class PullReport:
    model: str
    node: str
    revision: str | None
    commit: str | None
    seconds: float
    sync: SyncReport | None = None


def download_argv(container: ContainerSettings, image: str, model: RepoId, revision: str | None,
                  *, hf_home: str, user: str, name: str, env_file: str | None) -> list[str]:
    """`docker run ... hf download MODEL`: values are argv elements, the token is not one.
    The container gets the inventory's container.env (non-secret: e.g. HF_ENDPOINT, proxies)
    and network, none of the GPU/RDMA options: it only downloads."""
    env = {**container.env, "HF_HOME": CONTAINER_HF_HOME, "HOME": "/tmp", "NO_COLOR": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    command = ["download", model.id] + (["--revision", revision] if revision is not None else [])
    return docker_run(container, Run(
        name=name, image=image, command=command, entrypoint="hf", remove=True, user=user,
        env=env, env_file=env_file, volumes=[f"{hf_home}:{CONTAINER_HF_HOME}"],
        accelerated=False))


def pull(session: Session, model: RepoId, revision: str | None = None, *,
         progress: Progress | None = None, then_sync: bool = True) -> PullReport:
    prog = progress or NullProgress()
    inv = session.inventory
    head = inv.head_name
    t0 = time.monotonic()
    prog.status(head, "checking the image")
    image = imageid.expected(inv).ref
    nm = NodeModels.open(session, head)
    docker.require_image(nm.conn, image, STEP)
    uid, gid = (nm.conn.run(["id", flag]).check().stdout.strip() for flag in ("-u", "-g"))
    hf_home = str(PurePosixPath(nm.hub).parent)
    nm.conn.run(["mkdir", "-p", nm.hub]).check()
    token = next((session.secrets[k] for k in TOKEN_NAMES if k in session.secrets), None)
    env_file = _put_token(nm, token) if token is not None else None
    argv = download_argv(inv.container, image, model, revision, hf_home=hf_home,
                         user=f"{uid}:{gid}", name=naming.model_pull_container(inv.cluster),
                         env_file=env_file)
    prog.status(head, f"downloading {model}")

    def on_line(_stream: str, line: str) -> None:
        prog.status(head, line.strip()[:100])

    try:
        res = nm.conn.run(argv, timeout=inv.model.pull_timeout_s, on_line=on_line)
    finally:
        if env_file is not None:
            nm.conn.run(["rm", "-f", env_file])
    if res.exit_code != 0:
        raise StepError(STEP, explain(res.stdout + "\n" + res.stderr, model, revision, res.exit_code),
                        node=head)
    commit = snapshot_commit(res.stdout)
    prog.status(head, f"downloaded {model}" + (f" @ {commit[:12]}" if commit else ""))
    report = PullReport(str(model), head, revision, commit, time.monotonic() - t0)
    if then_sync:
        report.sync = sync(session, model, head, progress=prog)
    return report


def _put_token(nm: NodeModels, token: Secret) -> str:
    path = nm.paths.env_file(f"model-pull-{secrets.token_hex(4)}")
    nm.conn.put(render_env_file({"HF_TOKEN": token}), path, mode=0o600)
    return path


_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")


def snapshot_commit(stdout: str) -> str | None:
    """`hf download` prints the snapshot path last; its last component is the commit."""
    for line in reversed(stdout.strip().splitlines()):
        m = _SNAPSHOT.search(line.strip())
        if m and COMMIT_RE.fullmatch(m.group(1)):
            return m.group(1)
    return None


_NETWORK = ("network is unreachable", "name or service not known", "temporary failure in name",
            "failed to resolve", "connecterror", "connecttimeout", "connection refused",
            "max retries exceeded", "cannot find the requested files in the local cache",
            "we cannot find the appropriate snapshot", "localentrynotfounderror",
            "offline mode is enabled", "nodename nor servname", "timed out",
            "check your internet connection", "connection error", "no route to host")
_AUTH = ("401", "403", "gatedrepoerror", "repositorynotfounderror", "repository not found",
         "invalid username or password", "access to model", "is restricted")
_REVISION = ("revisionnotfounderror", "revision not found", "invalid rev id")


def explain(text: str, model: RepoId, revision: str | None, exit_code: int) -> str:
    """Turn hf/docker's failure output into what went wrong and what to do."""
    low = text.lower()
    last = _last_error_line(text)
    if any(k in low for k in _REVISION):
        return f"revision {revision!r} of {model} does not exist on the hub ({last})"
    if any(k in low for k in _AUTH):
        return (f"the hub refused {model}: it does not exist, or it is gated/private and "
                f"HF_TOKEN is missing or lacks access ({last})")
    if any(k in low for k in _NETWORK):
        return (f"cannot reach the Hugging Face hub from this node ({last}). The head needs "
                "internet access (or HF_ENDPOINT set to a mirror in container.env) to pull; "
                f"or put the model into its HF cache another way and run: "
                f"dgxcluster model sync {model}")
    if "no space left" in low:
        return f"the HF cache ran out of disk space ({last})"
    if "executable file not found" in low or '"hf"' in low:
        return f"the image has no `hf` command (huggingface_hub >= 0.34 needed) ({last})"
    return f"hf download exited {exit_code}: {last or 'no output'}"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _last_error_line(text: str) -> str:
    text = _ANSI.sub("", text)
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower() or "exception" in ln.lower():
            return ln[:300]
    return lines[-1][:300] if lines else ""
