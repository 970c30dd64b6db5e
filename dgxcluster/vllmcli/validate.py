"""Check `vllm serve` flags from the inventory or a recipe against vLLM's own argument table.

vLLM only finds a bad flag when `vllm serve` starts, after the cluster is up, and a flag that
repeats one dgxcluster generates silently overrides it. This finds both before any node is
touched, with vLLM's parsing rules (`--foo_bar` = `--foo-bar`, `--x=y`, `--no-x`, `-O3`,
abbreviations, dotted JSON keys, nargs) and a message naming the key the flag came from.

Two passes: a scan of each fragment that reports every problem with "did you mean", then the
rebuilt argparse parser over the whole command line as vLLM would see it, as the final word
(anything it refuses that the scan did not explain is reported with argparse's own message).
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dgxcluster.errors import InventoryError
from dgxcluster.nodeside import vllm_argparse
from dgxcluster.vllmcli.snapshot import Option, Snapshot, available, load

# dest -> the inventory key that makes dgxcluster pass it (serving/plan.py serve_command)
GENERATED_OWNERS: dict[str, str] = {
    "model_tag": "serve.model",
    "served_model_name": "serve.served_model_name",
    "tensor_parallel_size": "serve.tensor_parallel_size",
    "pipeline_parallel_size": "serve.pipeline_parallel_size",
    "distributed_executor_backend": "serve.executor (ray, or mp for native)",
    "nnodes": "serve.executor native (the inventory's node count)",
    "node_rank": "serve.executor native (the head is rank 0, the others follow in inventory order)",
    "master_addr": "serve.executor native (the head's fabric_ip)",
    "master_port": "serve.master_port",
    "headless": "serve.executor native (every node but the head)",
    "data_parallel_size": "serve.data_parallel_size",
    "data_parallel_size_local": "serve.data_parallel_size (replicas per node, from the placement)",
    "data_parallel_address": "serve.data_parallel_size (the head's fabric_ip)",
    "data_parallel_rpc_port": "serve.data_parallel_rpc_port",
    "data_parallel_start_rank": "serve.data_parallel_size (each node's first replica)",
    "host": "serve.host",
    "port": "serve.port",
    "revision": "serve.revision",
    "max_model_len": "serve.max_model_len",
    "gpu_memory_utilization": "serve.gpu_memory_utilization",
}
_MULTI = ("append", "extend")
END_OF_OPTIONS = "--"
# what the checks validate() delegates look at, where it helps to say so
_DELEGATED = {"validate_chat_template": ": that the file exists in the container or is one of its "
              "built-in templates"}
# Combinations `vllm serve` refuses in ServeSubcommand.cmd (vllm/entrypoints/cli/serve.py, 0.20.1)
_COMBOS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("headless", "api_server_count"),
     "--api-server-count cannot be used with --headless (no API servers are started in headless mode)"),
)


@dataclass(frozen=True)
class Fragment:
    """Flags from one place: `key` is what messages name (`serve.extra_args`, `recipe gpt-oss`)."""

    key: str
    argv: Sequence[str]


@dataclass(frozen=True)
class Problem:
    key: str
    flag: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.key}: {self.flag}: {self.message}" if self.flag else f"{self.key}: {self.message}"


@dataclass
class Use:
    """One option given in a fragment: argv[start:end] of it set `dest`."""

    key: str
    dest: str
    token: str
    values: list[str]
    start: int = 0
    end: int = 0


def _resolve(parser: argparse.ArgumentParser, token: str) -> tuple[str, Any, str | None] | None:
    """argparse's own reading of an option-looking token: ("ok", action, explicit) |
    ("unknown", None, None) | ("ambiguous", message, None) | None for a positional."""
    try:
        found = parser._parse_optional(token)
    except vllm_argparse.ParseError as e:
        return ("ambiguous", e.message, None)
    if found is None:
        return None
    if isinstance(found, list):  # Python >= 3.12.7: a list of (action, option, sep, explicit)
        found = found[0]
    action, explicit = found[0], found[-1]
    if action is None:
        return ("unknown", None, None)
    return ("ok", action, explicit)


class _Scan:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.parser = snap.serve_parser
        self.problems: list[Problem] = []
        self.uses: list[Use] = []
        self.start = 0

    def add(self, key: str, flag: str, msg: str, severity: Literal["error", "warning"] = "error") -> None:
        self.problems.append(Problem(key, flag, msg, severity))

    def option_like(self, token: str) -> bool:
        return token == END_OF_OPTIONS or _resolve(self.parser, _normal(token)) is not None

    def fragment(self, frag: Fragment) -> None:
        argv = list(frag.argv)
        i = 0
        while i < len(argv):
            tok = argv[i]
            self.start = i
            i += 1
            if tok == END_OF_OPTIONS:
                if argv[i:]:
                    self.add(frag.key, "--", f"vLLM reads no options after `--`: "
                             f"{' '.join(argv[i:])} would be unrecognized arguments")
                return
            if re.match(r"^--model(=.+|$)", tok):  # FlexibleArgumentParser moves it in front
                self.add(frag.key, tok, "dgxcluster passes the model as `vllm serve MODEL` (from "
                         "serve.model); vLLM would take this as the model and refuse the other one")
                i += 0 if "=" in tok else 1
                continue
            if tok.startswith("-O") and tok != "-O":
                i = self.use(frag, tok, "--optimization-level", [tok[3:] if tok[2:3] == "=" else tok[2:]],
                             argv, i, explicit=True)
                continue
            if tok == "-O" and i < len(argv) and argv[i] in {"0", "1", "2", "3"}:
                i = self.use(frag, tok, "--optimization-level", [], argv, i)
                continue
            if tok.startswith("-") and "." in tok.split("=", 1)[0]:
                i = self.dotted(frag, tok, argv, i)
                continue
            norm = _normal(tok)
            if not tok.startswith("-") or _resolve(self.parser, norm) is None:
                self.add(frag.key, tok, "a value with no option before it; vLLM would refuse it as "
                         "an unrecognized argument")
                continue
            head, _, explicit = norm.partition("=")
            i = self.use(frag, tok, norm, [explicit] if "=" in norm else [], argv, i,
                         explicit="=" in norm, head=head)

    def use(self, frag: Fragment, tok: str, norm: str, given: list[str], argv: list[str], i: int,
            explicit: bool = False, head: str | None = None) -> int:
        res = _resolve(self.parser, norm if not explicit or head is None else f"{head}={given[0]}")
        if res is None or res[0] == "unknown":
            self.unknown(frag.key, tok, head or norm)
            return _skip_values(argv, i, self.option_like)
        if res[0] == "ambiguous":
            self.add(frag.key, tok, f"{res[1]}; spell it out")
            return _skip_values(argv, i, self.option_like)
        action = res[1]
        opt = self.snap.options.get(action.dest)
        values = list(given)
        nargs = action.nargs
        if nargs == 0:
            if values:
                self.add(frag.key, tok, f"takes no value (got {values[0]!r})")
            values = []
        elif not explicit:
            values, i = _take(argv, i, nargs, self.option_like)
        if nargs not in (0,) and not _enough(nargs, len(values)):
            self.add(frag.key, tok, _need_text(nargs))
        for v in values:
            self.check_value(frag.key, tok, action, v)
        if opt is not None:
            spelled = (head or norm).split("=", 1)[0]
            if opt.deprecated:
                self.add(frag.key, tok, f"deprecated in vLLM {self.snap.version}; it may be removed",
                         "warning")
            if spelled not in self.snap.flags:
                self.add(frag.key, tok, f"vLLM reads this abbreviation as {opt.flag}; spell it out "
                         "(a later vLLM may add a flag that makes it ambiguous)", "warning")
        self.uses.append(Use(frag.key, action.dest, tok, values, self.start, i))
        return i

    def dotted(self, frag: Fragment, tok: str, argv: list[str], i: int) -> int:
        """`--cfg.key value` / `--cfg.key=value` / `--cfg.key+ a,b`: a key of a JSON option."""
        head, eq, value = tok.partition("=")
        base, _, path = _normal(head).partition(".")
        if not eq:
            if i >= len(argv):
                self.add(frag.key, tok, "needs a value (vLLM crashes on a dotted option at the end)")
                return i
            value, i = argv[i], i + 1
        res = _resolve(self.parser, base)
        if res is None or res[0] != "ok":
            self.unknown(frag.key, tok, base)
            return i
        action = res[1]
        opt = self.snap.options.get(action.dest)
        kind = ((opt.type or {}).get("of") or opt.type or {}).get("kind") if opt else None
        first = path.split(".")[0].rstrip("+")
        if kind not in ("json", "dataclass", "union_dict_and_str", "parse"):
            self.add(frag.key, tok, f"{base} does not take JSON, so it has no keys")
        elif kind == "dataclass" and opt is not None:
            fields = (opt.type or {}).get("fields") or ((opt.type or {}).get("of") or {}).get("fields") or []
            if fields and first not in fields:
                self.add(frag.key, tok, f"{_cls(opt)} has no field {first!r}{_did_you_mean(first, fields)}")
        self.uses.append(Use(frag.key, action.dest, tok, [value], self.start, i))
        return i

    def check_value(self, key: str, tok: str, action: argparse.Action, value: str) -> None:
        conv = action.type
        try:
            converted = conv(value) if callable(conv) else value
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            name = getattr(conv, "__name__", "value")
            detail = str(e) if isinstance(e, argparse.ArgumentTypeError) else f"not a valid {name}"
            self.add(key, tok, f"invalid value {value!r}: {detail}")
            return
        opt = self.snap.options.get(action.dest)
        custom = vllm_argparse.CUSTOM_ACTIONS.get(opt.kind) if opt is not None else None
        if custom is not None:
            err = custom[1](converted)
            if err:
                self.add(key, tok, err)
                return
        if action.choices is not None and converted not in action.choices:
            shown = ", ".join(str(c) for c in action.choices)
            close = _did_you_mean(value, [str(c) for c in action.choices])
            self.add(key, tok, f"invalid choice {value!r}{close} (vLLM {self.snap.version} takes: {shown})")

    def unknown(self, key: str, tok: str, spelled: str) -> None:
        flag = spelled.split("=", 1)[0]
        hint = _did_you_mean(flag, [s for s in self.snap.flags if s.startswith("--")])
        elsewhere = [v for v in available() if v != self.snap.version and flag in load(v).flags]
        where = f"; vLLM {', '.join(elsewhere)} has it" if elsewhere else ""
        self.add(key, tok, f"vLLM {self.snap.version}'s `vllm serve` has no option {flag}{hint}{where}")


def _normal(tok: str) -> str:
    return vllm_argparse.rewrite([tok])[0] if tok.startswith("--") else tok


def _cls(opt: Option) -> str:
    t = opt.type or {}
    return str(t.get("class") or (t.get("of") or {}).get("class") or opt.flag)


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _enough(nargs: int | str | None, n: int) -> bool:
    if nargs is None:
        return n == 1
    if nargs == "?":
        return n <= 1
    if nargs == "*":
        return True
    if nargs == "+":
        return n >= 1
    return n == nargs


def _need_text(nargs: int | str | None) -> str:
    return {None: "expects one value", "+": "expects at least one value", "?": "takes at most one value"
            }.get(nargs, f"expects {nargs} values")  # type: ignore[arg-type]


def _take(argv: list[str], i: int, nargs: int | str | None, option_like: Any) -> tuple[list[str], int]:
    limit = {None: 1, "?": 1}.get(nargs, nargs if isinstance(nargs, int) else len(argv))  # type: ignore[arg-type]
    out: list[str] = []
    while i < len(argv) and len(out) < limit and not option_like(argv[i]):
        out.append(argv[i])
        i += 1
    return out, i


def _skip_values(argv: list[str], i: int, option_like: Any) -> int:
    while i < len(argv) and not option_like(argv[i]):
        i += 1
    return i


def delegated_checks(snap: Snapshot) -> dict[str, list[str]]:
    """dest -> the functions vLLM's validate() hands it to (which this module does not re-create).
    A function is about the option its name names (validate_chat_template -> chat_template); the
    other options it merely reads are left out, so `--port` is not flagged for a gRPC check."""
    by_function: dict[str, list[str]] = {}
    for call in snap.table.get("validate_calls", []):
        by_function.setdefault(call["function"], []).append(call["dest"])
    out: dict[str, list[str]] = {}
    for function, dests in by_function.items():
        subject = function.removeprefix("validate_").removesuffix("_args").removesuffix("_arg")
        named = [d for d in dests if d == subject]
        for d in named or dests:
            out.setdefault(d, []).append(function)
    return out


def uses(snap: Snapshot, frag: Fragment) -> list[Use]:
    """The options `frag` sets, as vLLM reads them (unknown ones left out)."""
    scan = _Scan(snap)
    scan.fragment(frag)
    return scan.uses


def check(snap: Snapshot, fragments: Sequence[Fragment], *, generated: Sequence[str] = (),
          owners: Mapping[str, str] = GENERATED_OWNERS) -> list[Problem]:
    """Every problem with `fragments` as flags of `vllm serve` in vLLM `snap.version`.

    `generated` is what dgxcluster itself passes after `vllm serve` (model first); `owners`
    names the inventory key behind each generated dest, for the duplicate message.
    """
    scan = _Scan(snap)
    gen = _Scan(snap)
    gen.fragment(Fragment("generated", list(generated)[1:] if generated else []))
    generated_dests = {u.dest: u.token for u in gen.uses}
    for p in errors(gen.problems):  # what dgxcluster itself passes, unknown to this vLLM release
        scan.add(owners.get(next((u.dest for u in gen.uses if u.token == p.flag), ""),
                            "dgxcluster's own flags"), p.flag, p.message)
    if generated:
        generated_dests["model_tag"] = generated[0]
    for frag in fragments:
        scan.fragment(frag)
    seen: dict[str, Use] = {}
    delegated = delegated_checks(snap)
    for use in scan.uses:
        opt = snap.options.get(use.dest)
        if use.dest in generated_dests:
            owner = owners.get(use.dest, "dgxcluster")
            scan.add(use.key, use.token, f"dgxcluster already passes {generated_dests[use.dest]} "
                     f"(from {owner}); set {owner} instead of repeating it here")
        elif use.dest in seen and (opt is None or opt.kind not in _MULTI):
            first = seen[use.dest]
            if first.key == use.key:
                scan.add(use.key, use.token, f"given twice ({first.token} earlier); vLLM keeps only the "
                         "last", "warning")
            else:
                scan.add(use.key, use.token, f"also set in {first.key} ({first.token})")
        seen.setdefault(use.dest, use)
        if use.dest == "help":
            scan.add(use.key, use.token, "makes vLLM print its help and exit instead of serving")
        for call in delegated.get(use.dest, []):
            if use.dest == "chat_template" and use.values and any(c in use.values[0] for c in "{}\n"):
                continue  # an inline template: nothing on the node to look for
            scan.add(use.key, use.token, f"vLLM {snap.version} also checks this at start "
                     f"({call}{_DELEGATED.get(call, '')}); dgxcluster cannot check it here", "warning")
        if use.dest == "config":
            scan.add(use.key, use.token, "vLLM reads more options from that file on the node; "
                     "dgxcluster cannot check them", "warning")
    _final_pass(snap, fragments, generated, scan)
    return scan.problems


def _final_pass(snap: Snapshot, fragments: Sequence[Fragment], generated: Sequence[str], scan: _Scan) -> None:
    """The whole command line through the rebuilt parser and vLLM's validate rules."""
    argv = list(generated) if generated else ["some/model"]
    for f in fragments:
        argv += list(f.argv)
    keys = ", ".join(dict.fromkeys(f.key for f in fragments)) or "generated"
    if any(u.dest == "help" for u in scan.uses):
        return  # argparse would print the help and exit; the scan said so
    try:
        ns = snap.parser.parse_args(vllm_argparse.preprocess(["serve", *argv]))
    except vllm_argparse.ParseError as e:
        if not any(p.severity == "error" for p in scan.problems):
            scan.add(keys, "", f"vLLM {snap.version} would refuse this command line: {e.message}")
        return
    except IndexError:
        return  # a dotted option with no value: the scan said so
    owner = {u.dest: u.key for u in scan.uses}
    for rule in snap.table.get("validate", []):
        if getattr(ns, rule["if"], None) and not getattr(ns, rule["requires"], None):
            need = _flag_of(snap, rule["requires"])
            flag = _flag_of(snap, rule["if"])
            scan.add(owner.get(rule["if"], keys), flag, f"needs {need}: vLLM {snap.version} refuses to start "
                     f"without it ({rule['message']!r})")
    for dests, message in _COMBOS:
        if all(d in snap.options for d in dests) and all(getattr(ns, d, None) for d in dests):
            scan.add(owner.get(dests[0], keys), snap.options[dests[0]].flag, message)


def _flag_of(snap: Snapshot, dest: str) -> str:
    return snap.options[dest].flag if dest in snap.options else dest


def errors(problems: Sequence[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def raise_for(problems: Sequence[Problem], source: str) -> None:
    """InventoryError (exit 2) naming `source` (the inventory or recipe file) for the errors."""
    errs = errors(problems)
    if errs:
        raise InventoryError(source, [(p.key, f"{p.flag}: {p.message}" if p.flag else p.message)
                                      for p in errs])
