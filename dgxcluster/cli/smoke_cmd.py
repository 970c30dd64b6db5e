"""`dgxcluster smoke`: streaming chat completions against the endpoint, with latencies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, state

if TYPE_CHECKING:
    from dgxcluster.core.session import Session
    from dgxcluster.remote.connection import Connection
    from dgxcluster.smoke import SmokeReport


def register(app: typer.Typer) -> None:
    @app.command("smoke")
    @errors_to_exit
    def smoke(
        ctx: typer.Context,
        prompt: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--prompt", help="The user message. Default: a three-sentence question "
                         "about tensor parallelism."),
        ] = None,
        max_tokens: Annotated[
            int, typer.Option("--max-tokens", help="Tokens to generate per request.")
        ] = 128,
        concurrency: Annotated[
            int, typer.Option("--concurrency", "-c", help="Requests sent at the same time.")
        ] = 1,
        json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    ) -> None:
        """Send chat completions to the cluster's endpoint and time them.

        Prints time to first token, total latency, and tokens/s from the server's `usage`
        (per request: decode speed; for the batch: aggregate throughput). Connects to the
        endpoint over HTTP, sending the API key `serve.api_key` names; through the head's SSH
        connection when `serve.endpoint_via` is ssh, or (auto) when the endpoint does not
        answer from this machine and the head does.
        Exit 0 when every request succeeded, 1 with the reason when the server is
        unreachable, unhealthy or a request failed.
        """
        import json

        from dgxcluster.errors import DgxClusterError, UsageError
        from dgxcluster.smoke import DEFAULT_PROMPT, run_smoke

        if max_tokens < 1 or max_tokens > 1_000_000:
            raise UsageError("must be between 1 and 1000000", "--max-tokens")
        if concurrency < 1 or concurrency > 256:
            raise UsageError("must be between 1 and 256", "--concurrency")
        if prompt is None:
            prompt = DEFAULT_PROMPT
        if not prompt.strip():
            raise UsageError("must not be empty", "--prompt")
        inv = state(ctx).inventory()
        from contextlib import ExitStack

        from dgxcluster.core.endpoint import api_key
        from dgxcluster.core.endpointroute import EndpointRoute
        from dgxcluster.core.session import inventory_secrets

        key = api_key(inv, inventory_secrets(inv))
        with ExitStack() as opened:
            def head() -> Connection:  # SSH only if the endpoint is reached that way
                if not opened_sessions:
                    opened_sessions.append(opened.enter_context(state(ctx).session("smoke")))
                return opened_sessions[0].cluster.conn(inv.head_name)

            opened_sessions: list[Session] = []
            report = run_smoke(inv, prompt=prompt, max_tokens=max_tokens,
                               concurrency=concurrency, api_key=key,
                               route=EndpointRoute(inv, key, head))
        if json_out:
            typer.echo(json.dumps(report.to_json(), indent=2))
        else:
            _print(report)
        if not report.ok:
            raise DgxClusterError(f"smoke test failed: {report.failure}")


def _fmt(x: float | None, unit: str = "s", digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def _print(report: SmokeReport) -> None:
    from rich.table import Table

    from dgxcluster.cli.reportout import report_console

    out = report_console()
    ep = report.endpoint
    out.print(f"endpoint {ep.url}/v1  ({ep.state}){ep.path_note()}", highlight=False)
    if not ep.ready:
        return
    out.print(f"model    {report.model}", highlight=False)
    t = Table(title_justify="left")
    for col in ("request", "first token", "total", "tokens", "decode tok/s", "result"):
        t.add_column(col, justify="right" if col != "result" else "left")
    for r in report.requests:
        tokens = "-" if r.completion_tokens is None else str(r.completion_tokens)
        if r.completion_tokens is not None and not r.usage_reported:
            tokens += " (chunks; no usage)"
        result = "[green]ok[/green]" if r.ok else f"[bold red]failed[/bold red]: {r.error}"
        t.add_row(str(r.index), _fmt(r.ttft_s), _fmt(r.total_s), tokens,
                  _fmt(r.decode_tps, "", 1), result)
    out.print(t)
    ok = [r for r in report.requests if r.ok]
    if ok:
        agg = _fmt(report.aggregate_tps, " tok/s", 1)
        out.print(
            f"{len(ok)}/{len(report.requests)} ok; median first token {_fmt(report.median('ttft_s'))}, "
            f"median total {_fmt(report.median('total_s'))}, median decode "
            f"{_fmt(report.median('decode_tps'), ' tok/s', 1)}; aggregate {report.completion_tokens} "
            f"tokens in {_fmt(report.wall_s)} = {agg}",
            highlight=False, soft_wrap=True,
        )
        sample = ok[0].text.strip().replace("\n", " ")
        out.print(f"reply    {sample[:160]}{'…' if len(sample) > 160 else ''}", highlight=False,
                  soft_wrap=True)
