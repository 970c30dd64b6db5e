"""Dump `vllm serve`'s argument table from vLLM's own parser (run by scripts/vllm-cli-snapshot).

Runs inside a throwaway virtualenv holding the vLLM release to describe. It builds the top-level
`vllm` parser exactly as `vllm.entrypoints.cli.main.main` does, reads every action of the
`serve` subparser, then asks the real parser (and the real `validate`) about a set of probe
values and argv fragments, so that dgxcluster's emulation can be tested against vLLM's answers.
Writes one JSON document to the file named as its argument. Stdlib + vLLM only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import inspect
import io
import json
import platform
import re
import sys
from typing import Any

# vLLM only collects help texts when it sees --help on its command line (arg_utils.NEEDS_HELP).
sys.argv_out = sys.argv[1] if len(sys.argv) > 1 else "/dev/stdout"  # type: ignore[attr-defined]
sys.argv = ["vllm", "serve", "--help"]

from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: E402

_KINDS = {
    "_StoreAction": "store", "_StoreTrueAction": "store_true", "_StoreFalseAction": "store_false",
    "_StoreConstAction": "store_const", "BooleanOptionalAction": "boolean_optional",
    "_AppendAction": "append", "_AppendConstAction": "append_const", "_CountAction": "count",
    "_HelpAction": "help", "_VersionAction": "version", "_ExtendAction": "extend",
}


def _closure(fn: Any, name: str) -> Any:
    code = getattr(fn, "__code__", None)
    if code is None or name not in code.co_freevars:
        return None
    return fn.__closure__[code.co_freevars.index(name)].cell_contents


def describe_type(t: Any) -> dict[str, Any] | None:
    """What a type callable does, in a vocabulary dgxcluster can re-create without vLLM."""
    if t is None:
        return None
    if t in (int, float, str):
        return {"kind": t.__name__}
    if t is json.loads:
        return {"kind": "json"}
    name = getattr(t, "__name__", "")
    if name in ("human_readable_int", "human_readable_int_or_auto", "union_dict_and_str"):
        return {"kind": name}
    if name == "_optional_type":
        return {"kind": "optional", "of": describe_type(_closure(t, "return_type"))}
    if name == "_parse_type":
        return {"kind": "parse", "of": describe_type(_closure(t, "return_type"))}
    if name == "parse_dataclass" and t.__defaults__:
        cls = t.__defaults__[0]
        fields = sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []
        return {"kind": "dataclass", "class": cls.__name__, "fields": fields}
    try:
        source = inspect.getsource(t).strip()
    except (OSError, TypeError):
        source = ""
    if "s.lower().replace(\"-\", \"_\")" in source:
        return {"kind": "lower_snake"}
    return {"kind": "opaque", "name": f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', name)}",
            "source": source[:400]}


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        if isinstance(v, (set, frozenset, tuple)):
            return [_jsonable(x) for x in v]
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {"repr": type(v).__name__ + "(...)"}
        return {"repr": repr(v)[:200]}


def use_cpu_platform() -> str:
    """With no GPU, vLLM's platform is "unspecified" and its config defaults cannot be built.
    Fall back to the CPU platform exactly as vLLM's own main() does for `vllm bench`. Only
    device-dependent defaults can differ from a GB10 machine; option names, nargs, types and
    choices do not depend on it."""
    from vllm import platforms

    if platforms.current_platform.is_unspecified():
        from vllm.platforms.cpu import CpuPlatform

        platforms.current_platform = CpuPlatform()
    return type(platforms.current_platform).__name__


def _main_source() -> str:
    from vllm.entrypoints.cli import main as cli_main

    return inspect.getsource(cli_main.main)


def build_cli() -> tuple[FlexibleArgumentParser, argparse.ArgumentParser, list[str]]:
    """The top-level `vllm` parser as main() builds it, and its `serve` subparser. The list of
    command modules and where the epilog comes from are read from main()'s own source, so this
    follows vLLM as it moves them between releases."""
    import importlib

    src = _main_source()
    block = src[src.index("CMD_MODULES = ["):]
    modules = re.findall(r"vllm\.entrypoints\.cli\.([\w.]+),", block[:block.index("]")])
    epilog_mod = re.search(r"from ([\w.]+) import[^\n]*VLLM_SUBCMD_PARSER_EPILOG", src)
    epilog = importlib.import_module(epilog_mod.group(1)).VLLM_SUBCMD_PARSER_EPILOG if epilog_mod else ""

    parser = FlexibleArgumentParser(description="vLLM CLI", epilog=epilog.format(subcmd="[subcommand]"))
    parser.add_argument("-v", "--version", action="version", version=importlib.metadata.version("vllm"))
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    cmds: dict[str, Any] = {}
    for mod in modules:
        module = importlib.import_module(f"vllm.entrypoints.cli.{mod}")
        for cmd in module.cmd_init():
            cmd.subparser_init(subparsers).set_defaults(dispatch_function=cmd.cmd)
            cmds[cmd.name] = cmd
    build_cli.cmds = cmds  # type: ignore[attr-defined]
    return parser, subparsers.choices["serve"], list(subparsers.choices)


def serve_validate_function() -> Any:
    """The function `vllm serve`'s validate() calls (validate_parsed_serve_args)."""
    validate = type(build_cli.cmds["serve"]).validate  # type: ignore[attr-defined]
    name = re.search(r"(\w+)\(args\)", inspect.getsource(validate)).group(1)  # type: ignore[union-attr]
    return validate.__globals__[name]


def run_real(parser: FlexibleArgumentParser, argv: list[str]) -> dict[str, Any]:
    """Parse `vllm serve MODEL *argv` with vLLM's parser, then validate, as main() does."""
    err = io.StringIO()
    out = io.StringIO()
    full = ["serve", "some/model", *argv]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            args = parser.parse_args(full)
            build_cli.cmds["serve"].validate(args)  # type: ignore[attr-defined]
    except SystemExit as e:
        return {"ok": False, "exit": e.code, "stderr": err.getvalue()}
    except Exception as e:
        return {"ok": False, "exit": 1, "raised": f"{type(e).__name__}: {e}"}
    return {"ok": True}


def probe_values(type_desc: dict[str, Any] | None, choices: list[Any] | None) -> list[str]:
    kind = (type_desc or {}).get("kind")
    vals: list[str] = []
    if choices:
        vals += [str(choices[0]), "not-a-choice"]
    if kind == "optional":
        vals += ["None", ""]
        kind = (type_desc or {}).get("of", {}).get("kind") if type_desc else None
    if kind == "parse":
        kind = "json"
    vals += {
        "int": ["8", "x", "1.5"], "float": ["0.5", "x"],
        "human_readable_int": ["32768", "1k", "1.5K", "x"],
        "human_readable_int_or_auto": ["auto", "-1", "1k", "x"],
        "json": ['{"a": 1}', "{bad", "[1]"], "union_dict_and_str": ["abc", '{"a": 1}', "{bad"],
        "dataclass": ["{}", "{bad", '{"no_such_field_xyz": 1}'],
        "str": [] if choices else ["abc"],
    }.get(kind or "", [])
    return list(dict.fromkeys(vals))


CONFORMANCE = [
    [], ["--max-model-len", "4096"], ["--max_model_len", "4096"], ["--max-model-len=4k"],
    ["--max-model-len", "auto"], ["--max-model-len", "lots"], ["--enforce-eager"], ["--enforce_eager"],
    ["--enforce-eager=1"], ["--no-enforce-eager"], ["--enable-prefix-caching"],
    ["--no-enable-prefix-caching"],
    ["-O3"], ["-O", "3"], ["-O=3"], ["-tp", "2"], ["-tp=2"], ["-pp", "2"], ["--swap-space", "4"],
    ["--disable-log-requests"], ["--max-model", "4096"], ["--max", "1"], ["--enable-auto-tool-choice"],
    ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
    ["--enable_auto_tool_choice", "--tool_call_parser=hermes"], ["--kv-cache-dtype", "fp8"],
    ["--kv-cache-dtype", "fp9"], ["--compilation-config", '{"cudagraph_mode": "PIECEWISE"}'],
    ["--compilation-config", "{bad"], ["--compilation-config", '{"no_such_field_xyz": 1}'],
    ["--compilation-config.cudagraph_mode", "PIECEWISE"], ["-cc.cudagraph_mode=PIECEWISE"],
    ["--served-model-name", "a", "b"], ["--port", "x"], ["--port", "80"], ["--gpu-memory-utilization", "0.8"],
    ["--gpu-memory-utilization", "high"], ["--speculative-config", "{bad"],
    ["--speculative-config", '{"method": "mtp", "num_speculative_tokens": 1}'], ["--enable-log-outputs"],
    ["--enable-log-outputs", "--enable-log-requests"], ["--tensor-parallel-size"],
    ["--tensor-parallel-size", "--enforce-eager"], ["--trust-remote-code", "--trust-remote-code"],
    ["--host", "0.0.0.0", "--host", "::"], ["--hf-overrides", '{"a": 1}'], ["--foo"], ["--foo", "1", "--bar"],
    ["-x"], ["--limit-mm-per-prompt.image", "2"], ["--limit-mm-per-prompt", '{"image": 2}'],
    ["--quantization", "fp8"], ["--quantization", "nope"], ["--dtype", "bfloat16"], ["--dtype", "fp4"],
    ["--reasoning-parser", "qwen3"], ["--tool-call-parser", "no_such_parser"],
    ["--max-num-batched-tokens", "8k"], ["--async-scheduling"], ["--load-format", "fastsafetensors"],
    ["--enable-expert-parallel"], ["--data-parallel-size", "2"], ["--nnodes", "2"], ["--headless"],
    ["--distributed-executor-backend", "ray"], ["--distributed-executor-backend", "slurm"],
    ["--api-key", "k"], ["--revision", "main"], ["--enable-chunked-prefill"],
    ["--mm-encoder-tp-mode", "data"], ["--override-generation-config", '{"max_new_tokens": null}'],
    ["--chat-template-content-format", "openai"], ["--default-chat-template-kwargs", '{"a": 1}'],
    ["--max-num-seqs", "4"], ["--", "--enforce-eager"],
]


_RULE = re.compile(r'if args\.(\w+) and not args\.(\w+):\s*raise (\w+)\(\s*"([^"]+)"')


def validate_rules() -> list[dict[str, str]]:
    """The `A needs B` checks of validate_parsed_serve_args, read from its source."""
    src = inspect.getsource(serve_validate_function())
    return [{"if": a, "requires": b, "raises": exc, "message": msg} for a, b, exc, msg in _RULE.findall(src)]


_ARG_READ = re.compile(r'(?:getattr\(\s*args,\s*"(\w+)"|args\.(\w+))')


def validate_calls() -> list[dict[str, str]]:
    """(function, dest) for each validate_* function validate() calls and each option it reads."""
    fn = serve_validate_function()
    out = []
    for name, rest in re.findall(r"(validate_\w+)\(([^)]*\)?)", inspect.getsource(fn)):
        called = fn.__globals__.get(name)
        if called is None or called is fn:
            continue
        text = rest if not rest.startswith("args)") else inspect.getsource(called)
        dests = {a or b for a, b in _ARG_READ.findall(text)} - {"subparser"}
        out += [{"function": name, "dest": d} for d in sorted(dests)]
    return out


def main() -> None:
    import vllm

    platform_name = use_cpu_platform()
    parser, serve, subcommands = build_cli()
    # older vLLM keeps deprecated actions on the class, newer on each parser
    marked = getattr(serve, "_deprecated", None) or getattr(FlexibleArgumentParser, "_deprecated", set())
    deprecated = {id(a) for a in marked}
    groups = {id(a): g.title for g in serve._action_groups for a in g._group_actions}
    options: list[dict[str, Any]] = []
    for a in serve._actions:
        kind = _KINDS.get(type(a).__name__, "custom:" + type(a).__name__)
        type_desc = describe_type(a.type)
        choices = [_jsonable(c) for c in a.choices] if a.choices is not None else None
        # every spelling the parser registers (EnableDisableAction hides --no-enable-x from
        # option_strings but still accepts it) and the ones that switch the option off
        strings = list(a.option_strings) + [s for s, act in serve._option_string_actions.items()
                                            if act is a and s not in a.option_strings]
        negative = sorted(getattr(a, "negative_option_strings", None)
                          or [s for s in strings if kind == "boolean_optional" and s.startswith("--no-")])
        entry: dict[str, Any] = {
            "dest": a.dest, "option_strings": strings, "negative_option_strings": negative, "kind": kind,
            "nargs": a.nargs, "const": _jsonable(a.const), "default": _jsonable(a.default),
            "type": type_desc, "choices": choices, "required": bool(a.required),
            "metavar": _jsonable(a.metavar), "group": groups.get(id(a)),
            "deprecated": id(a) in deprecated or bool(getattr(a, "deprecated", False)),
            "help": (a.help or "").replace("%%", "%") if isinstance(a.help, str) else None,
        }
        if a.option_strings and kind not in ("help", "version") and a.nargs != 0:
            entry["probes"] = [[v, run_real(parser, [a.option_strings[0], v])["ok"]]
                               for v in probe_values(type_desc, choices)]
        options.append(entry)
    unrecognized = run_real(parser, ["--no-such-flag-xyz", "1"])
    doc = {
        "format": 1,
        "vllm_version": importlib.metadata.version("vllm"),
        "vllm_module_version": getattr(vllm, "__version__", None),
        "python": platform.python_version(),
        "platform": platform_name,
        "argparse_prog": {"top": parser.prog, "serve": serve.prog},
        "usage": {"top": parser.format_usage(), "serve": serve.format_usage()},
        "subcommands": subcommands,
        "serve_usage_arg": serve.usage,
        "options": options,
        "validate": validate_rules(),
        # further checks validate() delegates (e.g. a chat template file must exist): named with
        # the options they read, so dgxcluster can say it does not re-create them
        "validate_calls": validate_calls(),
        "unrecognized_example": unrecognized,
        "conformance": [{"argv": c, **run_real(parser, c)} for c in CONFORMANCE],
        "validate_source": inspect.getsource(serve_validate_function()),
    }
    # vLLM's logger writes to stdout: the document goes to the file named on the command line
    with open(sys.argv_out, "w") as fh:  # type: ignore[attr-defined]
        json.dump(doc, fh, indent=1, sort_keys=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
