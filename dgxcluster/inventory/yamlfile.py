"""Read YAML strictly: duplicate keys are errors, and every value keeps its line number.

Hostile documents end in a YamlProblem, not a crash or a hang: nesting deeper than any
inventory needs, aliases that expand to millions of values ("billion laughs"), numbers
Python refuses to convert.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

Path_ = tuple[str | int, ...]
#: Far beyond any inventory (its deepest key is 4 levels down), far below Python's stack.
MAX_DEPTH = 32
#: Values after expanding aliases; a two-node inventory has about 100.
MAX_VALUES = 50_000


class YamlProblem(Exception):
    """The text is not valid YAML for an inventory; carries a line number when known."""

    def __init__(self, message: str, line: int | None = None, path: Path_ = ()) -> None:
        self.line = line
        self.path = path
        super().__init__(message)


def load_yaml(text: str) -> tuple[Any, dict[Path_, int]]:
    """Parse `text`; return the data and a map from key path to 1-based line number."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlProblem(f"not valid YAML: {_one_line(str(exc.problem or exc))}", line) from None
    except yaml.YAMLError as exc:  # e.g. a control character (ReaderError)
        raise YamlProblem(f"not valid YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise YamlProblem(f"nested deeper than {MAX_DEPTH} levels") from None
    if root is None:
        return None, {}
    lines: dict[Path_, int] = {}
    _walk(root, (), lines, [0])
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlProblem(f"not a valid value: {_one_line(str(exc.problem or exc))}", line) from None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        why = str(exc)
        if "Exceeds the limit" in why:  # Python's int_max_str_digits
            why = "a number has thousands of digits"
        raise YamlProblem(f"not a valid value: {_one_line(why)[:200]}") from None
    return data, lines


def _one_line(text: str) -> str:
    """PyYAML's messages span lines and name "<unicode string>"; one line reads better."""
    text = text.replace('in "<unicode string>", ', "at ")
    return " ".join(text.split())


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], count: list[int]) -> None:
    line_no = node.start_mark.line + 1
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise YamlProblem(f"more than {MAX_VALUES} values (YAML aliases expanding without end?)",
                          line_no, path)
    if len(path) > MAX_DEPTH:
        raise YamlProblem(f"nested deeper than {MAX_DEPTH} levels", line_no, path[:MAX_DEPTH])
    lines[path] = line_no
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if key == "<<":
                raise YamlProblem(
                    "YAML merge keys (<<) are not supported", key_node.start_mark.line + 1, path
                )
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlProblem(
                    f"duplicate key {key!r} (first at line {seen[key]})", line, path + (key,)
                )
            seen[key] = line
            lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, count)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, count)


def format_path(path: Path_) -> str:
    """('nodes', 1, 'port') -> 'nodes[1].port'; a key that is not a plain word is quoted
    (`container.env['A B']`), so a newline or ': ' in a key cannot garble the message."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += ("." if out else "") + str(part)
        else:
            out += f"[{_shown_key(str(part))}]"
    return out


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


def _shown_key(key: str) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:36] + "...'"
