"""How `dgxcluster build` prints its outcome: one row per node, then each failure's last lines."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dgxcluster.image.run import BuildReport


def print_report(report: BuildReport, *, json_out: bool = False) -> None:
    from dgxcluster.cli.output import outcome_table

    if json_out:
        import json

        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        how = f"pull {report.pulled}" if report.pulled else report.strategy
        title = f"{report.ref} ({how}{', dry run' if report.dry_run else ''})"
        outcome_table(title, report.nodes)
        for note in report.notes:
            sys.stderr.write(f"note: {note}\n")
    for n in report.nodes:
        if not n.tail:
            continue
        sys.stderr.write(f"\n{n.node}: last {len(n.tail)} lines:\n")
        for line in n.tail:
            sys.stderr.write(f"{n.node}: {line}\n")
    for n in report.nodes:
        if n.log is not None and n.status.value in ("failed", "unreachable"):
            sys.stderr.write(f"{n.node}: full log: {n.log}\n")
    if report.log_dir is not None and report.log_dir.exists():
        sys.stderr.write(f"logs: {report.log_dir}\n")
    sys.stderr.flush()
