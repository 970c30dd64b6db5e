"""Run one node-side program: `python3 nodeside-<hash>.pyz PROGRAM ARGS...` on a node (the
zipapp `dgxcluster.core.ship` builds from this package), `python3 -m dgxcluster.nodeside
PROGRAM ARGS...` here."""

from __future__ import annotations

import importlib
import os
import sys

PROGRAMS = ("relay", "hfcache", "layerfilter", "nccl_probe", "nccl_libs", "clusterlock",
            "supervisor", "boot")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in PROGRAMS:
        sys.stderr.write(f"usage: nodeside PROGRAM [ARGS...]  (PROGRAM: {', '.join(PROGRAMS)})\n")
        return 2
    program = importlib.import_module(f"{__package__}.{args[0]}")
    code = int(program.main(args[1:]))
    if getattr(program, "HARD_EXIT", False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
