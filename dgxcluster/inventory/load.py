"""Find, read and validate the inventory; turn every problem into one clear InventoryError.

Settings come from the YAML file, and any of them can be overridden by an environment
variable through pydantic-settings: DGXCLUSTER_<SECTION>__<KEY> (e.g.
DGXCLUSTER_SSH__CONNECT_TIMEOUT=5, DGXCLUSTER_SERVE__MODEL=org/name). pydantic-settings (and
the asyncio, ssl and dotenv it imports: ~30 ms of every command's start-up) is loaded only
when such a variable is set; without one the file is validated by the same model directly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.inventory import crosschecks
from dgxcluster.inventory.schema import CrossCheckError, Executor, InventoryModel
from dgxcluster.inventory.yamlfile import YamlProblem, format_path, load_yaml

DEFAULT_PATH = Path("inventory/cluster.yaml")
ENV_PATH = "DGXCLUSTER_INVENTORY"
ENV_PREFIX = "DGXCLUSTER_"
#: Variables with our prefix that are not inventory settings.
NOT_SETTINGS = frozenset({ENV_PATH, "DGXCLUSTER_LOG_DIR", "DGXCLUSTER_LOG_FORMAT",
                          "DGXCLUSTER_WARM_SOCKET", "DGXCLUSTER_WARM_REPORT"})
#: An inventory is a few kB; anything far larger is the wrong file (or /dev/zero).
MAX_BYTES = 1 << 20
_TOO_LARGE = f"larger than {MAX_BYTES >> 20} MiB: not an inventory file (an inventory is a few kB)"


class Inventory(InventoryModel):
    """The validated inventory, with DGXCLUSTER_* environment overrides applied."""

    # Set by the loader: where the file was, so relative paths resolve beside it.
    _source: Path | None = None

    @property
    def source(self) -> Path | None:
        return self._source

    def local_path(self, p: Path) -> Path:
        """A path from the inventory, made absolute: `~` expanded, relative to the file's dir."""
        p = p.expanduser()
        if p.is_absolute() or self._source is None:
            return p
        return (self._source.parent / p).resolve()


def with_executor(inv: Inventory, executor: Executor, option: str = "--executor") -> Inventory:
    """`inv` with serve.executor replaced for one run (`start --executor`), refused (exit 2,
    naming the option) for what the file's value would be refused for: ports that clash, a
    TP x PP the nodes cannot share."""
    if executor == inv.serve.executor:
        return inv
    new = inv.model_copy(update={"serve": inv.serve.model_copy(update={"executor": executor})})
    problems = [msg for _path, msg in
                crosschecks.port_problems(new)]
    parallel = new.parallel_problem()
    if parallel and executor == "native":
        problems.append(parallel)
    if problems:
        raise UsageError(f"{executor}: " + "; ".join(problems), option)
    return new


def resolve_path(cli_path: str | Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """The inventory file to use: -i/--inventory, then $DGXCLUSTER_INVENTORY, then the default."""
    env = os.environ if environ is None else environ
    if cli_path:
        return Path(cli_path)
    if env.get(ENV_PATH):
        return Path(env[ENV_PATH])
    return DEFAULT_PATH


def load_inventory(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Inventory:
    """Load and validate the inventory. Raises InventoryError; never touches the network."""
    env = dict(os.environ if environ is None else environ)
    file = resolve_path(path, env)
    shown = str(file) if str(file).isprintable() else repr(str(file))
    try:
        exists, is_dir = file.exists(), file.is_dir()
    except OSError as exc:  # e.g. a name longer than the filesystem allows
        raise InventoryError(_short(shown), [("", f"cannot read: {exc.strerror or exc}")]) from None
    if not exists:
        hint = ""
        if path is None and ENV_PATH not in env:
            hint = " (pass -i PATH, set DGXCLUSTER_INVENTORY, or copy inventory/example.yaml)"
        raise InventoryError(_short(shown), [("", f"inventory file not found{hint}")])
    if is_dir:
        raise InventoryError(shown, [("", "is a directory, not an inventory file")])
    try:
        with open(file, "rb") as fh:  # a pipe (-i <(...)) works too; /dev/zero does not hang
            raw = fh.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise InventoryError(shown, [("", _TOO_LARGE)])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(shown, [("", f"cannot read: {exc}")]) from None
    return parse_inventory(text, shown, env, source=file)


def parse_inventory(
    text: str,
    shown: str = "<inventory>",
    environ: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> Inventory:
    """Validate inventory text (the pure half of `load_inventory`)."""
    env = dict(os.environ if environ is None else environ)
    if len(text) > MAX_BYTES:
        raise InventoryError(shown, [("", _TOO_LARGE)])
    try:
        data, lines = load_yaml(text)
    except YamlProblem as exc:
        raise InventoryError(shown, [(format_path(exc.path), str(exc), exc.line)]) from None
    if data is None:
        raise InventoryError(shown, [("", "file is empty; it needs at least a 'nodes' list")])
    if not isinstance(data, dict):
        raise InventoryError(shown, [("", "top level must be a mapping of keys (nodes:, ssh:, ...)")])
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise InventoryError(shown, [("", f"keys must be strings, got {bad_keys[0]!r}")])
    overrides = _env_overrides(env)
    try:
        inv = _build(data, overrides)
    except ValidationError as exc:
        raise InventoryError(shown, _problems(exc, lines, overrides)) from None
    except _BadEnvValue as exc:  # a DGXCLUSTER_* value that is not valid JSON for its section
        raise InventoryError(shown, [_settings_problem(exc.error, overrides)]) from None
    except _UnknownEnv as exc:
        raise InventoryError(
            shown,
            [("", f"environment variable {exc.key} names no inventory setting "
                  f"(sections: {', '.join(InventoryModel.model_fields)})")],
        ) from None
    object.__setattr__(inv, "_source", source.resolve() if source else None)
    return inv


M = TypeVar("M", bound=InventoryModel)


def revalidate(inv: M, data: dict[str, Any], shown: str) -> M:
    """`inv`'s kind of model from `data`: what the file and environment set (a dump of `inv`
    with `exclude_unset`) plus values merged in from elsewhere (a recipe), checked as a whole.
    The environment is not read again: `data` already carries its overrides."""
    try:
        new = _build(data, {}) if isinstance(inv, Inventory) else type(inv).model_validate(data)
    except ValidationError as exc:
        raise InventoryError(shown, _problems(exc, {}, {})) from None
    if isinstance(new, Inventory) and isinstance(inv, Inventory):
        object.__setattr__(new, "_source", inv.source)
    return new  # type: ignore[return-value]


def _short(shown: str, limit: int = 200) -> str:
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _settings_problem(exc: Exception, overrides: Mapping[str, str]) -> tuple[str, str]:
    """pydantic-settings says only which top-level field failed to parse: name the variable."""
    text = str(exc)
    field = text.split('field "', 1)[1].split('"', 1)[0] if 'field "' in text else ""
    keys = sorted(k for k in overrides if k.upper() == ENV_PREFIX + field.upper()
                  or k.upper().startswith(ENV_PREFIX + field.upper() + "__"))
    cause = f" ({exc.__cause__})" if exc.__cause__ else ""
    var = keys[0] if keys else "a DGXCLUSTER_* variable"
    return field, (f"environment variable {var} is not a valid value for this setting: "
                   f"sections and lists are given as JSON{cause}")


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in env.items()
        if k.upper().startswith(ENV_PREFIX) and k.upper() not in NOT_SETTINGS and v != ""
    }


@functools.cache
def _with_environment() -> type[Inventory]:
    """`Inventory` that also reads DGXCLUSTER_* variables (pydantic-settings, imported here)."""
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

    class EnvInventory(Inventory, BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
            extra="forbid",
            frozen=True,
            validate_default=True,
            case_sensitive=False,
            env_ignore_empty=True,
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (env_settings, init_settings)

    return EnvInventory


def _build(data: dict[str, Any], overrides: Mapping[str, str]) -> Inventory:
    if not overrides:
        return Inventory(**data)
    _reject_unknown_env(overrides)
    from pydantic_settings import SettingsError

    # pydantic-settings reads os.environ itself; hand it exactly our view of the environment.
    saved = {k: v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update(overrides)
        return _with_environment()(**data)
    except SettingsError as exc:
        raise _BadEnvValue(exc) from exc
    finally:
        for k in list(os.environ):
            if k.upper().startswith(ENV_PREFIX):
                del os.environ[k]
        os.environ.update(saved)


def _reject_unknown_env(overrides: Mapping[str, str]) -> None:
    fields = set(InventoryModel.model_fields)
    for key in overrides:
        top = key[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if top not in fields:
            raise _UnknownEnv(key)


class _BadEnvValue(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


class _UnknownEnv(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _problems(
    exc: ValidationError, lines: Mapping[tuple[str | int, ...], int], overrides: Mapping[str, str]
) -> list[tuple[str, str, int | None]]:
    out: list[tuple[str, str, int | None]] = []
    for err in exc.errors():
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, CrossCheckError):
            for path, msg in ctx_err.errors:
                env_key = _env_key_for(path, overrides)
                if env_key:  # the file's line would point at a value that is not in force
                    out.append((format_path(path), f"{msg} (from environment variable {env_key})",
                                None))
                else:
                    out.append((format_path(path), msg, _line(path, lines)))
            continue
        path = tuple(err["loc"])
        msg = _message(err)
        env_key = _env_key_for(path, overrides)
        if env_key:
            out.append((format_path(path), f"{msg} (from environment variable {env_key})", None))
        else:
            out.append((format_path(path), msg, _line(path, lines)))
    return out


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see inventory/example.yaml for every key)"
    if kind == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in err and kind not in ("missing",) and not isinstance(err["input"], (dict, list)):
        shown = repr(err["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg += f" (got {shown})"
    return msg


def _line(path: tuple[str | int, ...], lines: Mapping[tuple[str | int, ...], int]) -> int | None:
    probe = path
    while probe and probe not in lines:
        probe = probe[:-1]
    return lines.get(probe) if probe else None


def _env_key_for(path: tuple[str | int, ...], overrides: Mapping[str, str]) -> str | None:
    for n in range(len(path), 0, -1):
        key = ENV_PREFIX + "__".join(str(p) for p in path[:n]).upper()
        for k in overrides:
            if k.upper() == key:
                return k
    if path:
        key = ENV_PREFIX + "__".join(str(p) for p in path).upper() + "__"
        for k in overrides:
            if k.upper().startswith(key):
                return k
    return None
