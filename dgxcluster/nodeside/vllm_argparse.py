"""`vllm serve`'s command line, rebuilt from a snapshot of vLLM's own parser (stdlib only).

A snapshot (dgxcluster/vllmcli/snapshots/vllm-X.json, made by scripts/vllm-cli-snapshot from
the real vLLM release) lists every option of `vllm serve`. This module turns it back into an
`argparse` parser that behaves as vLLM's does: the same option strings, nargs, choices and
type checks, the same `vllm`/`vllm serve` usage lines, and FlexibleArgumentParser's rewriting
of the command line before argparse sees it (`--foo_bar` -> `--foo-bar`, `-O3`, dotted JSON
keys `--cfg.key value`). Two users: dgxcluster checks inventory flags against it before a node
is touched, and the testbed's vLLM stand-in parses its command line with it, so an unknown flag
makes the stand-in exit exactly as `vllm serve` does. Standard library only: it ships into the
testbed image (images/testbed/fetch-wheels copies it there).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

Table = Mapping[str, Any]
_JSON_PREFIX = re.compile(r"(?<=--)[^.]*")
_HUMAN = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
_JSON_HUMAN = re.compile(r"\b\d+(?:\.\d+)?[kKmMgGtT]\b")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class ParseError(Exception):
    """argparse refused the command line; `message` is what it would have printed."""

    def __init__(self, message: str, prog: str) -> None:
        self.message = message
        self.prog = prog
        super().__init__(f"{prog}: error: {message}")


class _Parser(argparse.ArgumentParser):
    """vLLM's FlexibleArgumentParser as far as the command line is concerned."""

    raise_errors = False

    def error(self, message: str) -> NoReturn:
        if self.raise_errors:
            raise ParseError(message, self.prog)
        super().error(message)


def human_readable_int(value: str) -> int:
    """vLLM's `1k` = 1000, `1K` = 1024 integers (vllm/utils/argparse_utils.py)."""
    value = value.strip()
    m = _HUMAN.fullmatch(value)
    if m:
        number, suffix = m.groups()
        if suffix in _DECIMAL:
            return int(float(number) * _DECIMAL[suffix])
        try:
            return int(number) * _BINARY[suffix]
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"Decimals are not allowed with binary suffixes like {suffix}. "
                f"Did you mean to use {number}{suffix.lower()} instead?") from e
    return int(value)


def human_readable_int_or_auto(value: str) -> int:
    value = value.strip()
    if value == "-1" or value.lower() == "auto":
        return -1
    return human_readable_int(value)


def _json_human(val: str) -> str:
    parts = re.split(r'("(?:[^"\\]|\\.)*")', val)
    for i in range(0, len(parts), 2):
        parts[i] = _JSON_HUMAN.sub(lambda m: str(human_readable_int(m.group())), parts[i])
    return "".join(parts)


def _parse_type(inner: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def parse(val: str) -> Any:
        try:
            return inner(val)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"Value {val} cannot be converted to {name}.") from e
    parse.__name__ = name
    return parse


def _lower_snake(val: str) -> str:
    return val.lower().replace("-", "_")


def _inner(desc: Mapping[str, Any]) -> Callable[[str], Any]:
    inner = make_type(desc["of"]) or str
    return _parse_type(inner, getattr(inner, "__name__", "value"))


def _optional(desc: Mapping[str, Any]) -> Callable[[str], Any]:
    parse = _inner(desc)

    def optional(val: str) -> Any:
        return None if val in ("", "None") else parse(val)
    optional.__name__ = "optional"
    return optional


def _dict_or_str(_desc: Mapping[str, Any]) -> Callable[[str], Any]:
    def dict_or_str(val: str) -> Any:
        if not re.match(r"(?s)^\s*{.*}\s*$", val):
            return val
        return None if val in ("", "None") else _parse_type(json.loads, "json")(val)
    return dict_or_str


def _dataclass_json(desc: Mapping[str, Any]) -> Callable[[str], Any]:
    fields = frozenset(desc.get("fields") or ())

    def dataclass_json(val: str) -> Any:
        try:
            doc = json.loads(_json_human(val))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from e
        if isinstance(doc, dict) and fields:
            extra = sorted(set(doc) - fields)
            if extra:
                raise argparse.ArgumentTypeError(
                    f"unknown field(s) of {desc.get('class')}: {', '.join(extra)}")
        return doc
    dataclass_json.__name__ = str(desc.get("class") or "dataclass")
    return dataclass_json


#: Type descriptors that name one callable, and those built from the descriptor's details.
_PLAIN: dict[str, Callable[[str], Any]] = {
    "int": int, "float": float, "str": str, "json": json.loads,
    "human_readable_int": human_readable_int,
    "human_readable_int_or_auto": human_readable_int_or_auto, "lower_snake": _lower_snake,
}
_BUILT: dict[str, Callable[[Mapping[str, Any]], Callable[[str], Any]]] = {
    "parse": _inner, "optional": _optional, "union_dict_and_str": _dict_or_str,
    "dataclass": _dataclass_json,
}


def make_type(desc: Mapping[str, Any] | None) -> Callable[[str], Any] | None:
    """The type callable a snapshot's type descriptor stands for (see scripts/vllm_cli_dump.py);
    `str` for an opaque one (a callable of vLLM's that the snapshot could only name)."""
    if desc is None:
        return None
    kind = desc["kind"]
    if kind in _BUILT:
        return _BUILT[kind](desc)
    return _PLAIN.get(kind, str)


def _default(opt: Mapping[str, Any]) -> Any:
    """The recorded default, unless the snapshot could only describe it (`{"repr": ...}`)."""
    d = opt.get("default")
    if d == argparse.SUPPRESS:
        return argparse.SUPPRESS  # the very object: argparse tells it by identity
    return None if isinstance(d, dict) and set(d) == {"repr"} else d


def lora_module_error(item: Any) -> str | None:
    """vLLM's LoRAParserAction (entrypoints/openai/cli_args.py): each --lora-modules value is
    `name=path` or a JSON object of LoRAModulePath's fields."""
    if item in (None, ""):
        return None
    if "=" in item and "," not in item:
        return None if item.count("=") == 1 else f"Invalid format for --lora-modules: {item}"
    try:
        doc = json.loads(item)
    except json.JSONDecodeError:
        return f"Invalid JSON format for --lora-modules: {item}"
    if not isinstance(doc, dict) or not {"name", "path"} <= set(doc) \
            or set(doc) - {"name", "path", "base_model_name"}:
        return f"Invalid fields for --lora-modules: {item}"
    return None


class _LoRAAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        for item in values or []:
            err = lora_module_error(item)
            if err:
                parser.error(err)
        setattr(namespace, self.dest, [v for v in values or [] if v not in (None, "")])


# custom argparse actions of vLLM's whose value checks are re-created here
CUSTOM_ACTIONS: dict[str, tuple[type[argparse.Action], Callable[[Any], str | None]]] = {
    "custom:LoRAParserAction": (_LoRAAction, lora_module_error),
}

class _Switch(argparse.Action):
    """An on/off option (BooleanOptionalAction, vLLM's EnableDisableAction): every spelling the
    parser registered, off for the negative ones (`--no-x`, `--disable-x`)."""

    def __init__(self, option_strings: list[str], dest: str, negative: Sequence[str] = (),
                 **kwargs: Any) -> None:
        self.negative = frozenset(negative)
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, option_string not in self.negative)


def negative_strings(opt: Mapping[str, Any]) -> list[str]:
    """The spellings that switch an on/off option off (older snapshots: the `--no-` ones)."""
    if opt.get("negative_option_strings"):
        return list(opt["negative_option_strings"])
    if opt["kind"] == "boolean_optional":
        return [s for s in opt["option_strings"] if s.startswith("--no-")]
    return []


_ACTIONS: dict[str, Any] = {
    "store": "store", "store_true": "store_true", "store_false": "store_false",
    "store_const": "store_const", "append": "append", "append_const": "append_const",
    "count": "count", "extend": "extend", "boolean_optional": argparse.BooleanOptionalAction,
}


def add_option(parser: argparse.ArgumentParser, opt: Mapping[str, Any]) -> None:
    kind = opt["kind"]
    if kind in ("help", "version"):
        return
    action = CUSTOM_ACTIONS[kind][0] if kind in CUSTOM_ACTIONS else _ACTIONS.get(kind, "store")
    kw: dict[str, Any] = {"dest": opt["dest"], "action": action, "default": _default(opt)}
    if kind in ("store", "append", "extend") or kind.startswith("custom:"):
        kw["nargs"] = opt["nargs"]
        kw["type"] = make_type(opt["type"])
        if opt.get("choices") is not None:
            kw["choices"] = opt["choices"]
        if kind.startswith("custom:") and opt["nargs"] == 0:
            kw = {"dest": opt["dest"], "action": "store_true", "default": _default(opt)}
    elif kind in ("store_const", "append_const"):
        kw["const"] = opt.get("const")
    strings = list(opt["option_strings"])
    negative = negative_strings(opt)
    if negative or kind == "boolean_optional":
        parser.add_argument(*strings, dest=opt["dest"], action=_Switch, negative=negative,
                            default=_default(opt))
        return
    if not strings:
        parser.add_argument(opt["dest"], nargs=opt["nargs"], type=make_type(opt["type"]) or str,
                            default=_default(opt))
        return
    parser.add_argument(*strings, **kw)


def build(table: Table, *, raise_errors: bool = False) -> tuple[argparse.ArgumentParser,
                                                                 argparse.ArgumentParser]:
    """(`vllm` parser, its `serve` subparser), as vLLM's cli/main.py builds them."""
    cls = type("VllmParser", (_Parser,), {"raise_errors": raise_errors})
    top = cls(prog=table["argparse_prog"]["top"], description="vLLM CLI")
    top.add_argument("-v", "--version", action="version", version=table["vllm_version"])
    sub = top.add_subparsers(required=False, dest="subparser", parser_class=cls)
    serve = None
    for name in table["subcommands"]:
        p = sub.add_parser(name, usage=table.get("serve_usage_arg") if name == "serve" else None)
        if name == "serve":
            serve = p
    if serve is None:
        raise ValueError("the snapshot has no `serve` subcommand")
    for opt in table["options"]:
        add_option(serve, opt)
    return top, serve


def preprocess(args: Sequence[str]) -> list[str]:
    """FlexibleArgumentParser.parse_args' rewriting of argv before argparse (vLLM's own rules)."""
    return _merge_dotted(rewrite(args))


def rewrite(args: Sequence[str]) -> list[str]:
    """Its first pass: `--a_b[.c_d]=v` -> `--a-b[.c_d]=v`, `-O3` -> `--optimization-level 3`."""
    processed: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--help="):
            processed.append("--help")
        elif arg.startswith("--"):
            if "=" in arg:
                key, value = arg.split("=", 1)
                processed.append(_JSON_PREFIX.sub(lambda m: m.group(0).replace("_", "-"), key, count=1)
                                 + "=" + value)
            else:
                processed.append(_JSON_PREFIX.sub(lambda m: m.group(0).replace("_", "-"), arg, count=1))
        elif arg.startswith("-O") and arg != "-O":
            processed += ["--optimization-level", arg[3:] if arg[2] == "=" else arg[2:]]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
            processed.append("--optimization-level")
        else:
            processed.append(arg)
    return processed


def _merge_dotted(processed: list[str]) -> list[str]:
    """`--cfg.a 1 --cfg.b+ x,y` -> `--cfg '{"a": 1, "b": ["x", "y"]}'`, appended at the end."""
    delete: set[int] = set()
    dict_args: dict[str, dict[str, Any]] = defaultdict(dict)
    for i, arg in enumerate(processed):
        if i in delete or not arg.startswith("-") or "." not in arg:
            continue
        if "=" in arg:
            arg, value_str = arg.split("=", 1)
            if "." not in arg:
                continue
        else:
            if i + 1 >= len(processed):
                raise IndexError("list index out of range")  # as vLLM: a crash, not a usage error
            value_str = processed[i + 1]
            delete.add(i + 1)
        if arg.endswith("+"):
            arg = arg[:-1]
            value_str = json.dumps(list(value_str.split(",")))
        key, *keys = arg.split(".")
        value = _dotted_value(value_str)
        for k in reversed(keys):
            value = {k: value}
        _update(dict_args[key], value)
        delete.add(i)
    out = [a for i, a in enumerate(processed) if i not in delete]
    for key, val in dict_args.items():
        out += [key, json.dumps(val)]
    return out


def _dotted_value(text: str) -> Any:
    """A dotted key's value as FlexibleArgumentParser reads it: JSON, else a human-readable
    int (`2k`), else the text."""
    try:
        return json.loads(text)
    except json.decoder.JSONDecodeError:
        try:
            return human_readable_int(text)
        except (ValueError, argparse.ArgumentTypeError):
            return text


def _update(original: dict[str, Any], update: dict[str, Any]) -> None:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(original.get(k), dict):
            _update(original[k], v)
        elif isinstance(v, list) and isinstance(original.get(k), list):
            original[k] += v
        else:
            original[k] = v


def validate_messages(table: Table, ns: argparse.Namespace) -> list[str]:
    """What vLLM's validate_parsed_serve_args would raise for this parse (its `A needs B` rules)."""
    out = []
    for rule in table.get("validate", []):
        if getattr(ns, rule["if"], None) and not getattr(ns, rule["requires"], None):
            out.append(rule["message"])
    return out


def parse_serve(table: Table, argv: Sequence[str], *, raise_errors: bool = False) -> argparse.Namespace:
    """`vllm serve *argv` through the rebuilt parser (exits 2 like vLLM unless raise_errors)."""
    top, _ = build(table, raise_errors=raise_errors)
    return top.parse_args(preprocess(["serve", *argv]))
