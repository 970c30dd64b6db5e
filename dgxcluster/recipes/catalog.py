"""Find and load recipes: the built-in ones (package data) or a file given by path."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.inventory.yamlfile import YamlProblem, format_path, load_yaml
from dgxcluster.recipes.schema import Recipe

MAX_BYTES = 256 * 1024


def parse(text: str, shown: str) -> Recipe:
    """A recipe from YAML text; InventoryError naming `shown`, the line and the key."""
    if len(text) > MAX_BYTES:
        raise InventoryError(shown, [("", f"larger than {MAX_BYTES // 1024} KiB: not a recipe")])
    try:
        data, lines = load_yaml(text)
    except YamlProblem as exc:
        raise InventoryError(shown, [(format_path(exc.path), str(exc), exc.line)]) from None
    if not isinstance(data, dict):
        raise InventoryError(shown, [("", "a recipe is a mapping of keys (name:, model:, ...)")])
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (see dgxcluster/recipes/builtin/*.yaml for every key)"
            problems.append((format_path(path), msg, lines.get(path)))
        raise InventoryError(shown, problems) from None


def load_file(path: Path, option: str = "recipe") -> Recipe:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", option) from None
    return parse(text, str(path))


def builtin() -> dict[str, Recipe]:
    """Every built-in recipe, by name (a file's name must be its recipe's name)."""
    out = {}
    for f in sorted(resources.files(__package__).joinpath("builtin").iterdir(), key=lambda f: f.name):
        if not f.name.endswith(".yaml"):
            continue
        shown = f"dgxcluster/recipes/builtin/{f.name}"
        recipe = parse(f.read_text(encoding="utf-8"), shown)
        if f"{recipe.name}.yaml" != f.name:
            raise InventoryError(shown, [("name", f"{recipe.name!r} does not match the file name")])
        out[recipe.name] = recipe
    return out


def get(name: str, option: str = "recipe") -> Recipe:
    """A built-in recipe by name, or a recipe file by path (anything with a `/` or `.yaml`);
    a UsageError names `option` (the CLI argument or inventory key it came from)."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        return load_file(Path(name), option)
    recipes = builtin()
    if name in recipes:
        return recipes[name]
    close = difflib.get_close_matches(name, list(recipes), n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UsageError(f"no recipe named {name!r}{hint}; `dgxcluster recipe ls` lists them", option)
