"""`dgxcluster exec`: run one command on every node at once, pdsh-style."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, finish, state


def register(app: typer.Typer) -> None:
    @app.command("exec", context_settings={"allow_interspersed_args": False}, no_args_is_help=True)
    @errors_to_exit
    def exec_(
        ctx: typer.Context,
        command: Annotated[
            list[str], typer.Argument(help="The command and its arguments, after '--'.")
        ],
        node: Annotated[
            Optional[list[str]],  # noqa: UP045
            typer.Option("--node", "-n", help="Only this node (repeatable). Default: all."),
        ] = None,
        json_out: Annotated[
            bool,
            typer.Option("--json", help="Print [{node, exit_code, stdout, stderr, duration_s, "
                         "truncated, dropped_bytes}]: each stream's last MiB (truncated: more "
                         "came; dropped_bytes: how much)."),
        ] = False,
        timeout: Annotated[
            Optional[float],  # noqa: UP045
            typer.Option("--timeout", help="Per-node command timeout in seconds.", min=0.1),
        ] = None,
    ) -> None:
        """Run a command on all nodes (or the --node ones) in parallel.

        Each output line is prefixed with its node name, as pdsh does, and printed as it
        arrives (any size: a line over 1 MiB is printed in 1 MiB pieces). The command runs
        as argv, not through a shell: use `-- sh -c '...'` for pipes or variables.
        Exit 0 if all succeeded, 1 if a command failed, 3 if a node was unreachable.
        """
        import json
        import sys
        import threading

        from dgxcluster.execute import outcomes, prefixed, run_everywhere
        from dgxcluster.secrets import mask_token_shapes, mask_token_shapes_bytes

        lock = threading.Lock()

        def live(node: str, stream: str, block: bytes) -> None:
            out = sys.stdout if stream == "stdout" else sys.stderr
            first, rest = prefixed(node, mask_token_shapes_bytes(block))
            with lock:
                out.flush()
                out.buffer.write(first)
                out.buffer.write(rest)
                out.buffer.flush()

        with state(ctx).session("exec") as session:
            results = run_everywhere(
                session, command, node, timeout=timeout, on_output=None if json_out else live
            )
        if json_out:
            rows: list[dict[str, object]] = []
            for name in results:
                value = results[name]
                if isinstance(value, BaseException):
                    rows.append({"node": name, "exit_code": None, "stdout": "", "stderr": "",
                                 "duration_s": None, "error": str(value)})
                else:
                    row = value.to_json()
                    for key in ("stdout", "stderr"):  # read back from the node: token shapes too
                        row[key] = mask_token_shapes(str(row[key]))
                    rows.append(row)
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        for name, err in results.errors.items():
            sys.stderr.write(f"{name}: error: {err}\n" if not str(err).startswith(name)
                             else f"{err}\n")
        failed = [n for n, r in results.values.items() if not r.ok]
        if not json_out:
            for name in failed:
                sys.stderr.write(f"{name}: exited {results.values[name].exit_code}\n")
        finish(outcomes(results))
