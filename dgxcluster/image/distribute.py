"""Ship an image from one node to its peers: `docker save` streamed into `docker load`.

The bytes go node to node over the fabric (`transfer.relay`), to every peer at once, framed
and sha256-checked, so a copy that breaks midway is reported and never half-loaded. Layers
that every peer already holds are left out of the stream (`layers.py`, `layerfilter.py`);
if a peer's docker refuses such a trimmed stream, that peer gets the whole image once more.
The caller then checks that every peer's image ID equals the source's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.units import human_bytes, human_rate
from dgxcluster.errors import ConnectError, DgxClusterError
from dgxcluster.image import dockercmd, layers

LIST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Delivery:
    node: str
    ok: bool
    detail: str
    unreachable: bool = False
    bytes: int = 0


def send_image(session: Session, source: str, ref: str, receivers: Sequence[str], *,
               paths: Mapping[str, NodePaths], timeout: float,
               progress: Progress | None = None, trim: bool = True) -> dict[str, Delivery]:
    """Per receiver, what happened. Never raises for a node's failure."""
    prog = progress or NullProgress()
    for node in receivers:
        prog.status(node, f"waiting for {source}")
    skip: list[str] = []
    if trim:
        skip = _skippable(session, source, ref, receivers, paths)
    out = _relay(session, source, ref, receivers, paths, skip, timeout, prog)
    retry = [n for n, d in out.items() if skip and not d.ok and _missing_layer(d.detail)]
    if retry:
        prog.message(f"{', '.join(retry)}: the trimmed stream was refused; sending the whole image")
        out.update(_relay(session, source, ref, retry, paths, [], timeout, prog))
    return out


def _missing_layer(detail: str) -> bool:
    """docker load's complaint about a layer file the trimmed stream left out."""
    return "no such file or directory" in detail and ("layer.tar" in detail or "blobs/" in detail)


def _filter_path(paths: NodePaths) -> str:
    return paths.bin_file(layers.filter_name())


def _skippable(session: Session, source: str, ref: str, receivers: Sequence[str],
               paths: Mapping[str, NodePaths]) -> list[str]:
    """The layers no receiver needs; [] if anything is unclear (then everything is sent)."""
    fpath = _filter_path(paths[source])
    answers = session.cluster.run(
        lambda node: layers.argv(ref, fpath if node == source else ""), [source, *receivers],
        timeout=LIST_TIMEOUT_S)
    if answers.errors or not all(r.ok for r in answers.values.values()):
        return []
    want, _, has_filter = layers.parse(answers.values[source].stdout)
    if not want:
        return []
    held = [layers.parse(answers.values[n].stdout)[1] for n in receivers]
    skip = layers.skippable(want, held)
    if skip and not has_filter:
        try:
            session.cluster.conn(source).put(layers.filter_source(), fpath, mode=0o700)
        except (DgxClusterError, OSError):
            return []
    return skip


def _relay(session: Session, source: str, ref: str, receivers: Sequence[str],
           paths: Mapping[str, NodePaths], skip: Sequence[str], timeout: float,
           prog: Progress) -> dict[str, Delivery]:
    from dgxcluster.core.relay import relay

    if skip:
        spool = paths[source].tmp_dir
        flags = [a for d in skip for a in ("--skip", d)]
        source_argv = ["python3", _filter_path(paths[source]), "--spool-dir", spool, *flags,
                       "--", *dockercmd.save_argv(ref)]
        prog.message(f"{source}: leaving out {len(skip)} layer(s) every receiver already holds")
    else:
        source_argv = dockercmd.save_argv(ref)
    try:
        res = relay(session, source, source_argv, dict.fromkeys(receivers, dockercmd.load_argv()),
                    timeout=timeout, progress=prog, step="distribute", paths=paths)
    except ConnectError as exc:
        return {n: Delivery(n, False, f"not received: {source} unreachable: {exc.reason}")
                for n in receivers}
    except DgxClusterError as exc:
        return {n: Delivery(n, False, f"not received: {exc}") for n in receivers}
    out: dict[str, Delivery] = {}
    for node in receivers:
        t = res.targets.get(node)
        if t is None:
            out[node] = Delivery(node, False, "not received: no outcome")
        elif t.ok:
            rate = f", {human_rate(t.bytes, t.seconds)}" if t.bytes > 10e6 and t.seconds else ""
            trimmed = f", {len(skip)} layer(s) already there" if skip else ""
            out[node] = Delivery(node, True, f"received from {source} ({human_bytes(t.bytes)} in "
                                             f"{t.seconds:.1f}s{rate}{trimmed})", bytes=t.bytes)
        else:
            out[node] = Delivery(node, False, t.detail, unreachable=": unreachable: " in t.detail)
    return out

