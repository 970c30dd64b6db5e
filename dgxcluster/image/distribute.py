"""Ship an image from one node to its peers: `docker save` streamed into `docker load`.

The bytes go node to node over the fabric (`core.relay`), to every peer at once, framed
and sha256-checked, so a copy that breaks midway is reported and never half-loaded. Layers
that every peer already holds are left out of the stream (`layers.py`, and on the source
the node-side `layerfilter`, which the relay ships with its own agent: `core.ship`);
if a peer's docker refuses such a trimmed stream, that peer gets the whole image once more.
The caller then checks that every peer's image ID equals the source's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dgxcluster.core import ship
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.core.units import human_bytes, human_rate
from dgxcluster.errors import ConnectError, DgxClusterError
from dgxcluster.image import dockercmd, layers
from dgxcluster.remote.command import Argv

LIST_TIMEOUT_S = 120.0
STEP = "receive"


def send_image(session: Session, source: str, ref: str, receivers: Sequence[str], *,
               paths: Mapping[str, NodePaths], timeout: float,
               progress: Progress | None = None, trim: bool = True) -> dict[str, Outcome]:
    """Per receiver, what happened (`data["bytes"]`: what it received). Never raises for a
    node's failure."""
    prog = progress or NullProgress()
    for node in receivers:
        prog.status(node, f"waiting for {source}")
    skip: list[str] = []
    if trim:
        skip = _skippable(session, source, ref, receivers, paths)
    out = _relay(session, source, ref, receivers, paths, skip, timeout, prog)
    retry = [n for n, o in out.items() if skip and not o.ok and _missing_layer(o.detail)]
    if retry:
        prog.message(f"{', '.join(retry)}: the trimmed stream was refused; sending the whole image")
        out.update(_relay(session, source, ref, retry, paths, [], timeout, prog))
    return out


def _missing_layer(detail: str) -> bool:
    """docker load's complaint about a layer file the trimmed stream left out."""
    return "no such file or directory" in detail and ("layer.tar" in detail or "blobs/" in detail)


def _skippable(session: Session, source: str, ref: str, receivers: Sequence[str],
               paths: Mapping[str, NodePaths]) -> list[str]:
    """The layers no receiver needs; [] if anything is unclear (then everything is sent)."""
    answers = session.cluster.run(layers.argv(ref), [source, *receivers], timeout=LIST_TIMEOUT_S)
    if answers.errors or not all(r.ok for r in answers.values.values()):
        return []
    want, _ = layers.parse(answers.values[source].stdout)
    if not want:
        return []
    return layers.skippable(want, [layers.parse(answers.values[n].stdout)[1] for n in receivers])


def _relay(session: Session, source: str, ref: str, receivers: Sequence[str],
           paths: Mapping[str, NodePaths], skip: Sequence[str], timeout: float,
           prog: Progress) -> dict[str, Outcome]:
    from dgxcluster.core.relay import relay

    source_argv: Argv
    if skip:
        spool = paths[source].tmp_dir
        flags = [a for d in skip for a in ("--skip", d)]
        source_argv = ship.argv(ship.path(paths[source]), "layerfilter", "--spool-dir", spool,
                                *flags, "--", *dockercmd.save_argv(ref))
        prog.message(f"{source}: leaving out {len(skip)} layer(s) every receiver already holds")
    else:
        source_argv = dockercmd.save_argv(ref)
    try:
        res = relay(session, source, source_argv, dict.fromkeys(receivers, dockercmd.load_argv()),
                    timeout=timeout, progress=prog, step="distribute", paths=paths)
    except ConnectError as exc:
        return {n: Outcome(n, STEP, Status.FAILED,
                           f"not received: {source} unreachable: {exc.reason}") for n in receivers}
    except DgxClusterError as exc:
        return {n: Outcome(n, STEP, Status.FAILED, f"not received: {exc}") for n in receivers}
    out: dict[str, Outcome] = {}
    for node in receivers:
        t = res.targets.get(node)
        if t is None:
            out[node] = Outcome(node, STEP, Status.FAILED, "not received: no outcome")
        elif t.ok:
            got = t.count("bytes")
            secs = t.duration_s
            rate = f", {human_rate(got, secs)}" if got > 10e6 and secs else ""
            trimmed = f", {len(skip)} layer(s) already there" if skip else ""
            out[node] = Outcome(node, STEP, Status.CHANGED, f"received from {source} ("
                                f"{human_bytes(got)} in {secs:.1f}s{rate}{trimmed})",
                                data={"bytes": got})
        else:
            out[node] = t.with_(step=STEP)
    return out

