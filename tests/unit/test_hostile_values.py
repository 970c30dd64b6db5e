"""Every hostile string (tests/hostile.py) in every inventory field and argument that reaches
a node: it is either refused by validation with a message naming the key (or option), or
passed literally, as exactly one argv element of the command that runs there.

The table says which, per field; tests/e2e/test_hostile.py proves the literal cases on a
testbed node (the process's own argv and environment, and no marker file).
"""

from __future__ import annotations

import copy
import os
import shlex
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.image import dockercmd
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.load import Inventory
from dgxcluster.models.repoid import RepoId, check_revision
from dgxcluster.remote.command import to_command_line
from dgxcluster.serving import plan
from tests.hostile import HOSTILE

BASE: dict[str, Any] = {
    "cluster": "hz",
    "nodes": [{"name": "a", "host": "10.0.0.1", "fabric_ip": "10.9.0.1"},
              {"name": "b", "host": "10.0.0.2", "fabric_ip": "10.9.0.2"}],
    "serve": {"model": "org/model"},
}
RESULTS: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    out = os.environ.get("DGXC_FUZZ_STATS")
    if out:
        with open(out, "a") as fh:
            for k, v in sorted(RESULTS.items()):
                fh.write(f"hostile {k} {v}\n")


def _inv(path: tuple[Any, ...], value: Any) -> Inventory:
    doc = copy.deepcopy(BASE)
    target: Any = doc
    for part in path[:-1]:
        if isinstance(part, str) and part not in target:
            target[part] = {}
        target = target[part]
    target[path[-1]] = value
    return parse_inventory(__import__("yaml").safe_dump(doc), "inv.yaml", environ={})


def _argv_of(inv: Inventory) -> list[list[str]]:
    """Every command `start` (both nodes, and vLLM) and `build` would run for this inventory."""
    paths = NodePaths("/home/u", inv.state_dir, inv.cluster)
    cmds = [plan.docker_run(inv, n, paths, "img:ctx-1", "cfg") for n in inv.names]
    cmds.append(plan.serve_exec(inv))
    cmds.append(plan.serve_command(inv))
    cmds.append(plan.prepare_dirs(inv, paths, True))
    cmds.append(dockercmd.build_argv(context_dir="/c", dockerfile="Dockerfile", tags=["t"],
                                     labels={}, build_args=dict(inv.image.build_args),
                                     secret_files={}, no_cache=False, cache_from=[]))
    for c in cmds:
        to_command_line(c)  # quotable: no NUL, no secret
    return cmds


def _elements(cmds: list[list[str]]) -> list[str]:
    return [a for c in cmds for a in c]


# field -> (inventory path, how a value is placed, which hostile kinds are refused,
#           how the literal value must appear as one argv element)
def _as_is(v: str) -> Any:
    return v


def _under_root(v: str) -> Any:
    return "/srv/" + v


FIELDS: dict[str, tuple[tuple[Any, ...], Any, set[str], Any]] = {
    "nodes[].name": (("nodes", 0, "name"), _as_is, set(HOSTILE), None),
    "nodes[].user": (("nodes", 0, "user"), _as_is, set(HOSTILE), None),
    "nodes[].host": (("nodes", 0, "host"), _as_is,
                     set(HOSTILE) - {"non-ascii", "glob"}, None),
    "cluster": (("cluster",), _as_is, set(HOSTILE), None),
    "fabric.rails[].interface": (("fabric", "rails"), lambda v: [{"interface": v}], set(HOSTILE), None),
    "fabric.rails[].rdma_device": (("fabric", "rails"),
                                   lambda v: [{"interface": "eth0", "rdma_device": v}], set(HOSTILE), None),
    "image.name": (("image", "name"), _as_is, set(HOSTILE), None),
    "serve.model": (("serve", "model"), _as_is, {"newline", "tab", "leading-dash", "leading-dashes", "long"},
                    lambda v: v),
    "serve.served_model_name": (("serve", "served_model_name"), _as_is,
                                {"newline", "tab", "leading-dash", "leading-dashes", "long"}, lambda v: v),
    "serve.revision": (("serve", "revision"), _as_is,
                       {"newline", "tab", "leading-dash", "leading-dashes", "long"}, lambda v: v),
    "serve.extra_args": (("serve", "extra_args"), lambda v: [v], set(), lambda v: v),
    "container.extra_args": (("container", "extra_args"), lambda v: [v], set(), lambda v: v),
    # docker takes any absolute device path (docker/cli validateLinuxPath) and refuses the rest
    "container.devices": (("container", "devices"), lambda v: ["/dev/" + v], set(),
                          lambda v: "/dev/" + v),
    "container.devices (relative)": (("container", "devices"), lambda v: [v], set(HOSTILE), None),
    # the container side of a volume must be absolute (moby ParseMountRaw)
    "container.volumes": (("container", "volumes"), lambda v: ["/srv/x:/" + v], set(),
                          lambda v: "/srv/x:/" + v),
    "container.volumes (relative target)": (("container", "volumes"), lambda v: ["/srv/x:" + v],
                                            set(HOSTILE), None),
    "container.env (value)": (("container", "env"), lambda v: {"HOSTILE": v}, {"newline"},
                              lambda v: "HOSTILE=" + v),
    "container.env (name)": (("container", "env"), lambda v: {v: "x"}, set(HOSTILE) - {"long"},
                             lambda v: v + "=x"),
    "fabric.nccl_env (value)": (("fabric", "nccl_env"), lambda v: {"NCCL_X": v}, {"newline"},
                                lambda v: "NCCL_X=" + v),
    "image.build_args (value)": (("image", "build_args"), lambda v: {"ARG_X": v}, {"newline"},
                                 lambda v: "ARG_X=" + v),
    "state_dir": (("state_dir",), _under_root, {"newline", "tab", "long"},
                  lambda v: "/srv/" + v + "/hz/env"),
    "state_dir (relative)": (("state_dir",), _as_is, set(HOSTILE), None),
    "container.hf_cache": (("container", "hf_cache"), _under_root, {"newline", "tab", "long"},
                           lambda v: "/srv/" + v + ":/root/.cache/huggingface"),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_value_is_refused_naming_the_key_or_passed_as_one_argv_element(
        field: str, kind: str) -> None:
    path, place, refused, shown = FIELDS[field]
    value = HOSTILE[kind]
    if kind in refused:
        with pytest.raises(InventoryError) as info:
            _inv(path, place(value))
        key = ".".join(str(p) for p in path if not isinstance(p, int))
        assert key.split(".")[0] in str(info.value), str(info.value)
        assert str(info.value).startswith("inv.yaml"), str(info.value)
        RESULTS[f"rejected {field}"] += 1
        return
    inv = _inv(path, place(value))
    if shown is None:  # in no argv: the name the SSH connection is opened to
        assert inv.nodes[0].host == value
    else:
        cmds = _argv_of(inv)
        for c in cmds:  # the one quoting step keeps every element whole, byte for byte
            assert shlex.split(to_command_line(c)) == c
        assert shown(value) in _elements(cmds), (field, kind)
    RESULTS[f"literal {field}"] += 1


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_model_ids_and_revisions_on_the_command_line_are_refused(kind: str) -> None:
    value = HOSTILE[kind]
    with pytest.raises(UsageError) as info:
        RepoId.parse(value)
    assert str(info.value).startswith("MODEL: ")
    if kind not in ("non-ascii",):
        with pytest.raises(UsageError, match=r"^--revision: "):
            check_revision(value)
        RESULTS["rejected --revision"] += 1
    RESULTS["rejected MODEL"] += 1
