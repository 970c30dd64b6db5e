"""Convert a recipe of the community launcher eugr/spark-vllm-docker (`run-recipe.sh`) into ours.

Its format (recipes/README.md there): `name`, `description`, `model`, `container`, `command`
(a `vllm serve` shell template with `{param}` placeholders filled from `defaults`, `{{`/`}}`
for braces), `defaults`, `env`, `mods`, `build_args`, `cluster_only`, `solo_only`,
`recipe_version`. What has no equivalent here is refused, not dropped: `mods` patch vLLM inside
the image and `build_args` build a different image, so the flags would not mean the same thing.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Mapping
from typing import Any

from dgxcluster.errors import InventoryError
from dgxcluster.inventory.yamlfile import YamlProblem, load_yaml
from dgxcluster.nodeside.vllm_argparse import human_readable_int_or_auto
from dgxcluster.recipes.schema import RECIPE_NAME_RE
from dgxcluster.vllmcli.snapshot import Snapshot
from dgxcluster.vllmcli.validate import Fragment, uses

KNOWN_KEYS = frozenset({"recipe_version", "name", "description", "model", "container", "command",
                        "defaults", "env", "mods", "build_args", "cluster_only", "solo_only"})
# dests the recipe's own keys carry; --host/--port are the inventory's (serve.host, serve.port)
_TOPOLOGY = {"tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
             "distributed_executor_backend", "max_model_len", "gpu_memory_utilization"}
_DROPPED = {"host", "port", "model_tag", "model"}
_PLACEHOLDER = re.compile(r"(?<!{){(\w+)}(?!})")


def _refuse(shown: str, key: str, why: str) -> InventoryError:
    return InventoryError(shown, [(key, why)])


def _fill(template: str, defaults: Mapping[str, Any], shown: str) -> str:
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in defaults})
    if missing:
        raise _refuse(shown, "command", f"placeholder(s) {', '.join(missing)} have no value in defaults")
    text = _PLACEHOLDER.sub(lambda m: str(defaults[m.group(1)]), template)
    return text.replace("{{", "{").replace("}}", "}")


def _their_recipe(text: str, shown: str) -> dict[str, Any]:
    """The recipe's YAML, refused when it has something we cannot carry over faithfully."""
    try:
        data, _ = load_yaml(text)
    except YamlProblem as exc:
        raise _refuse(shown, "", str(exc)) from None
    if not isinstance(data, dict) or "command" not in data:
        raise _refuse(shown, "", "not a spark-vllm-docker recipe (no `command:`)")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise _refuse(shown, unknown[0], "unknown key for a spark-vllm-docker recipe; not converted")
    for key, why in (("mods", "patches vLLM inside the image"), ("build_args", "builds a different image")):
        if data.get(key):
            raise _refuse(shown, key, f"{why}; dgxcluster has no equivalent, so the flags would not "
                          "mean the same here")
    if data.get("solo_only"):
        raise _refuse(shown, "solo_only", "a single-node recipe; dgxcluster serves across nodes")
    return data


def _serve_argv(data: Mapping[str, Any], shown: str) -> list[str]:
    """`vllm serve MODEL ...` from the recipe's command template, its placeholders filled."""
    command = _fill(str(data["command"]), dict(data.get("defaults") or {}), shown)
    try:
        argv = shlex.split(command.replace("\\\n", " "))  # a shell's line continuation
    except ValueError as exc:
        raise _refuse(shown, "command", f"not a shell command line: {exc}") from None
    if argv[:2] != ["vllm", "serve"] or len(argv) < 3 or argv[2].startswith("-"):
        raise _refuse(shown, "command", "must be `vllm serve MODEL ...` (anything else has no equivalent)")
    return argv


def _topology(values: Mapping[str, list[str]], shown: str) -> dict[str, Any]:
    """Our recipe's topology and memory keys from the values of vLLM's flags."""
    try:
        tp, pp, dp = (int((values.get(d) or ["1"])[0]) for d in
                      ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"))
        max_len = human_readable_int_or_auto(values["max_model_len"][0]) \
            if "max_model_len" in values else None
        gmu = float(values["gpu_memory_utilization"][0]) \
            if "gpu_memory_utilization" in values else None
    except (ValueError, IndexError, argparse.ArgumentTypeError) as exc:
        raise _refuse(shown, "command", f"a topology or memory flag has a bad value: {exc}") from None
    backend = values.get("distributed_executor_backend", [""])[0]
    out: dict[str, Any] = {"nodes": tp * pp * dp, "executor": "ray" if backend == "ray" else "native",
                           "tensor_parallel_size": tp, "pipeline_parallel_size": pp,
                           "data_parallel_size": dp}
    if max_len is not None:
        out["max_model_len"] = max_len
    if gmu is not None:
        out["gpu_memory_utilization"] = gmu
    return out


def _name(data: Mapping[str, Any]) -> str:
    name = str(data.get("name") or "imported").lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", name).strip("-.")[:64] or "imported"
    return name if re.match(RECIPE_NAME_RE, name) else "imported"


def convert(text: str, shown: str, snap: Snapshot, *, memory_gb: int = 128) -> dict[str, Any]:
    """Our recipe (as a dict, for YAML) from the text of one of theirs; InventoryError if it
    cannot be converted faithfully. `snap` is the vLLM release its flags are read against."""
    data = _their_recipe(text, shown)
    argv = _serve_argv(data, shown)
    model = argv[2]
    found = uses(snap, Fragment("command", argv[3:]))
    values: dict[str, list[str]] = {u.dest: u.values for u in found}
    taken = {i for u in found if u.dest in _TOPOLOGY | _DROPPED for i in range(u.start, u.end)}
    topology = _topology(values, shown)
    out: dict[str, Any] = {
        "name": _name(data),
        "description": str(data.get("description") or data.get("name") or model)[:500],
        "model": str(data.get("model") or model),
        "revision": None,
        "nodes": topology.pop("nodes"),
        "memory_gb": memory_gb,
        "executor": topology.pop("executor"),
        **topology,
        "flags": [tok for i, tok in enumerate(argv[3:]) if i not in taken],
        "env": {str(k): str(v) for k, v in dict(data.get("env") or {}).items()},
        "vllm": snap.version,
        "min_vllm": snap.version,
    }
    if data.get("container"):
        out["min_image"] = str(data["container"])
    out["source"] = (f"imported from {shown} (eugr/spark-vllm-docker recipe format); check the flags "
                     "and pin the model revision before relying on it")
    return out
