"""Serve a recipe: its values fill the inventory keys the inventory leaves unset.

Precedence, highest first: the inventory file and its DGXCLUSTER_* variables, then the recipe
(named by `start --recipe`, else `serve.recipe`), then dgxcluster's defaults. `origins` says
where each value came from, for `start --dry-run`.

Generic on purpose: `KEYS` maps each recipe field onto an inventory key path, so a key added
to the inventory (`serve.executor`, `serve.data_parallel_size`) needs one line here, no code.
Where this inventory has no such key, a recipe asking for what dgxcluster does anyway (the Ray
executor, one replica) is served, and one asking for something else is refused by name.
Flags merge per option, as vLLM reads them: a recipe flag setting an option that
`serve.extra_args` also sets is dropped (the inventory's wins); the others go first in
`serve.extra_args`, so everything that builds `vllm serve` command lines sees them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from dgxcluster.errors import InventoryError
from dgxcluster.inventory.load import ENV_PREFIX, Inventory, revalidate
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.inventory.yamlfile import format_path
from dgxcluster.recipes import catalog
from dgxcluster.recipes.schema import Recipe
from dgxcluster.vllmcli.snapshot import load
from dgxcluster.vllmcli.validate import Fragment, uses

M = TypeVar("M", bound=InventoryModel)
Path_ = tuple[str, ...]
_ANY = object()  # the key must exist in the inventory for any value
FLAGS: Path_ = ("serve", "extra_args")
RECIPE_KEY: Path_ = ("serve", "recipe")
INVENTORY = "inventory"
DEFAULT = "default"


@dataclass(frozen=True)
class Key:
    """A recipe field, the inventory key it fills, and what dgxcluster does without that key."""

    field: str
    path: Path_
    implicit: object = _ANY


KEYS: tuple[Key, ...] = (
    Key("model", ("serve", "model")),
    Key("revision", ("serve", "revision")),
    Key("executor", ("serve", "executor"), implicit="ray"),
    Key("tensor_parallel_size", ("serve", "tensor_parallel_size")),
    Key("pipeline_parallel_size", ("serve", "pipeline_parallel_size")),
    Key("data_parallel_size", ("serve", "data_parallel_size"), implicit=1),
    Key("max_model_len", ("serve", "max_model_len")),
    Key("gpu_memory_utilization", ("serve", "gpu_memory_utilization")),
    Key("env", ("container", "env")),  # a mapping: merged name by name
)


@dataclass(frozen=True)
class Merged(Generic[M]):
    """The inventory with the recipe merged in, and where each value came from."""

    inventory: M
    recipe: Recipe | None = None
    named_by: str = ""  # "start --recipe" | "serve.recipe"
    origins: dict[str, str] = field(default_factory=dict)  # "serve.model" -> "recipe X"
    recipe_flags: tuple[str, ...] = ()  # the recipe's flags kept, first in serve.extra_args
    own_flags: tuple[str, ...] = ()  # the inventory's serve.extra_args
    dropped: tuple[str, ...] = ()  # recipe flags the inventory's extra_args override

    @property
    def label(self) -> str:
        return f"recipe {self.recipe.name}" if self.recipe else ""

    def origin(self, path: Path_) -> str:
        return self.origins.get(format_path(path), DEFAULT)


def _exists(path: Path_) -> bool:
    model: type[BaseModel] = InventoryModel
    for part in path:
        info = model.model_fields.get(part)
        if info is None:
            return False
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return True


def _get(data: Mapping[str, Any], path: Path_) -> Any:
    cur: Any = data
    for part in path:
        if not isinstance(cur, Mapping) or part not in cur:
            return _ANY
        cur = cur[part]
    return cur


def _put(data: dict[str, Any], path: Path_, value: Any) -> None:
    cur = data
    for part in path[:-1]:
        cur = cur.setdefault(part, {})
    cur[path[-1]] = value


def _env_origin(path: Path_, environ: Mapping[str, str]) -> str | None:
    """The DGXCLUSTER_* variable that sets `path` (the loader lets them override the file)."""
    names = {k.upper(): k for k in environ if environ[k] != ""}
    for n in range(len(path), 0, -1):
        var = ENV_PREFIX + "__".join(path[:n]).upper()
        if var in names:
            return f"environment {names[var]}"
    return None


def _set_origin(path: Path_, environ: Mapping[str, str]) -> str:
    return _env_origin(path, environ) or INVENTORY


def origins_of(set_data: Mapping[str, Any], section: str, model: BaseModel,
               environ: Mapping[str, str]) -> dict[str, str]:
    """inventory/environment/default for every key of one section (what the file set)."""
    out = {}
    for name in type(model).model_fields:
        path = (section, name)
        out[format_path(path)] = (_set_origin(path, environ)
                                  if _get(set_data, path) is not _ANY else DEFAULT)
    return out


def _fill(recipe: Recipe, data: dict[str, Any], set_data: Mapping[str, Any], label: str,
          environ: Mapping[str, str], shown: str, lenient: bool) -> dict[str, str]:
    """Put the recipe's values under the inventory's; {dotted key: origin} of each."""
    origins: dict[str, str] = {}
    for key in KEYS:
        value = getattr(recipe, key.field)
        if value is None or value == {}:
            continue
        if not _exists(key.path):
            if value == key.implicit or lenient:
                continue
            raise InventoryError(shown, [(label, f"{key.field}: {value!r} needs the inventory key "
                                          f"{format_path(key.path)}, which this dgxcluster does not "
                                          "have; it cannot serve this recipe")])
        if isinstance(value, dict):
            mine = _get(set_data, key.path)
            mine = mine if isinstance(mine, dict) else {}
            for name in value:
                sub = (*key.path, name)
                origins[format_path(sub)] = _set_origin(sub, environ) if name in mine else label
            _put(data, key.path, {**value, **mine})
        elif _get(set_data, key.path) is _ANY:
            _put(data, key.path, value)
            origins[format_path(key.path)] = label
    return origins


def _flags(recipe: Recipe, own: list[str]) -> tuple[list[str], list[str]]:
    """(recipe flags kept, recipe flags dropped): an option the inventory's extra_args set wins."""
    snap = load(recipe.vllm)
    theirs = {u.dest for u in uses(snap, Fragment("serve.extra_args", own))}
    drop: set[int] = set()
    for u in uses(snap, Fragment("recipe", recipe.flags)):
        if u.dest in theirs:
            drop.update(range(u.start, u.end))
    kept = [f for i, f in enumerate(recipe.flags) if i not in drop]
    return kept, [f for i, f in enumerate(recipe.flags) if i in drop]


def apply(inv: M, recipe: Recipe, *, named_by: str = "serve.recipe", ref: str | None = None,
          environ: Mapping[str, str] | None = None, lenient: bool = False) -> Merged[M]:
    """`inv` with `recipe` under it (see the module docstring); InventoryError naming the recipe
    for a merged value the inventory's checks refuse (TP x PP beyond the nodes' GPUs, ...).
    `lenient` leaves out what this inventory has no key for, instead of refusing the recipe
    (for showing a recipe's command line, never for serving it)."""
    env = os.environ if environ is None else environ
    shown = str(getattr(inv, "source", None) or "<inventory>")
    label = f"recipe {recipe.name}"
    set_data = inv.model_dump(exclude_unset=True)
    data = inv.model_dump(exclude_unset=True)
    origins = {**origins_of(set_data, "serve", inv.serve, env),
               **_fill(recipe, data, set_data, label, env, shown, lenient)}
    if ref is not None and named_by != "serve.recipe":
        _put(data, RECIPE_KEY, ref)  # the config hash then covers the recipe too
        origins[format_path(RECIPE_KEY)] = named_by
    own = list(inv.serve.extra_args)
    kept, dropped = _flags(recipe, own)
    _put(data, FLAGS, kept + own)
    if kept:
        origins[format_path(FLAGS)] = (f"{label} + {origins[format_path(FLAGS)]}" if own
                                       else label)
    try:
        merged = revalidate(inv, data, shown)
    except InventoryError as exc:
        mine = {k for k, v in origins.items() if v == label}
        raise InventoryError(shown, [(p, f"{m} (from {label})" if p in mine else m, line)
                                     for p, m, line in exc.problems]) from None
    return Merged(merged, recipe, named_by, origins, tuple(kept), tuple(own), tuple(dropped))


def plain(inv: M, environ: Mapping[str, str] | None = None) -> Merged[M]:
    """No recipe: where each serve key came from (inventory, environment or default)."""
    env = os.environ if environ is None else environ
    return Merged(inv, origins=origins_of(inv.model_dump(exclude_unset=True), "serve", inv.serve, env),
                  own_flags=tuple(inv.serve.extra_args))


def find(ref: str, inv: InventoryModel, option: str) -> Recipe:
    """A built-in recipe by name, or a recipe file; a path in the inventory is relative to it."""
    if option == "serve.recipe" and isinstance(inv, Inventory) and (
            "/" in ref or ref.endswith((".yaml", ".yml"))):
        ref = str(inv.local_path(Path(ref)))
    return catalog.get(ref, option)


def resolve(inv: M, override: str | None = None,
            environ: Mapping[str, str] | None = None) -> Merged[M]:
    """The recipe `start --recipe` names (`override`), else serve.recipe, merged into `inv`."""
    ref, option = (override, "--recipe") if override else (inv.serve.recipe, "serve.recipe")
    if not ref:
        return plain(inv, environ)
    named_by = "start --recipe" if override else "serve.recipe"
    return apply(inv, find(ref, inv, option), named_by=named_by, ref=ref, environ=environ)
