"""Hostile strings shared by the fuzz, unit and end-to-end tests of bad input.

Each is a value a user (or a copy-paste accident) could put into the inventory or on the
command line. Markers name files a smuggled command would create: a test proves those
files never appear. `shell_markers()` lists them.
"""

from __future__ import annotations

import re

MARK_DIR = "/tmp"
MARK_PREFIX = "dgxc-pwned-"

HOSTILE: dict[str, str] = {
    "semicolon": f"a;touch {MARK_DIR}/{MARK_PREFIX}semicolon",
    "subst": f"$(touch {MARK_DIR}/{MARK_PREFIX}subst)",
    "backticks": f"`touch {MARK_DIR}/{MARK_PREFIX}backticks`",
    "newline": f"a\ntouch {MARK_DIR}/{MARK_PREFIX}newline",
    "quotes": "'\"q'\"\\'",
    "spaces": "a b  c",
    "tab": "a\tb",
    "leading-dash": "-rf",
    "leading-dashes": "--help",
    "non-ascii": "über-модель-模型-🙂",
    "glob": "*",
    "pipe-redirect": f"x | tee {MARK_DIR}/{MARK_PREFIX}pipe > {MARK_DIR}/{MARK_PREFIX}redir &",
    "env-expansion": "${HOME}$PATH",
    "long": "x" * 5000,
}


def markers() -> list[str]:
    """Every file a hostile value would create if a shell ever interpreted it."""
    return sorted(set(re.findall(re.escape(MARK_DIR) + "/" + re.escape(MARK_PREFIX) + r"[a-z]+",
                                 " ".join(HOSTILE.values()))))
