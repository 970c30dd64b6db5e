"""`dgxcluster bench`: llama-benchy sweeps against the endpoint, saved and compared."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, interrupt_on_signals, state

if TYPE_CHECKING:
    from dgxcluster.bench.presets import CellKey
    from dgxcluster.bench.progress import Tracker
    from dgxcluster.bench.results import BenchResult, Comparison
    from dgxcluster.bench.run import BenchSpec, Outcome, Target
    from dgxcluster.bench.tool import Tool
    from dgxcluster.secrets import Secret

LIST_HELP = "Comma-separated; replaces the preset's."


def register(app: typer.Typer) -> None:
    @app.command("bench")
    @errors_to_exit
    def bench(
        ctx: typer.Context,
        quick: Annotated[bool, typer.Option(
            "--quick", help="Preset (default): pp 2048, tg 32, depths 0 and 4096, concurrency "
            "1 and 4, 2 runs per cell.")] = False,
        standard: Annotated[bool, typer.Option(
            "--standard", help="Preset: pp 2048, tg 128, depths 0, 4096 and 16384, "
            "concurrency 1, 8 and 32, 3 runs per cell.")] = False,
        url: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--url", help="Any OpenAI-compatible endpoint, e.g. http://spark1:8000/v1. "
            "Default: the inventory's (head host, serve.port).", show_default=False)] = None,
        model: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--model", help="Served model to benchmark. Default: the one the endpoint lists.",
            show_default=False)] = None,
        pp: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--pp", help=f"Prompt sizes in tokens. {LIST_HELP}", show_default=False)] = None,
        tg: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--tg", help=f"Tokens to generate. {LIST_HELP}", show_default=False)] = None,
        depth: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--depth", help=f"Context depths in tokens. {LIST_HELP}", show_default=False)] = None,
        concurrency: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--concurrency", "-c", help=f"Concurrent requests. {LIST_HELP}",
            show_default=False)] = None,
        runs: Annotated[int, typer.Option(
            "--runs", help="Measured runs per cell, after one warmup run (0: the preset's).")
        ] = 0,
        tokenizer: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--tokenizer", help="Tokenizer for prompt sizes: a Hugging Face name or a local "
            "path (tokenizer.json). Default: the model's.", show_default=False)] = None,
        book_url: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--book-url", help="Text the prompts are cut from. Default: llama-benchy's "
            "(a Project Gutenberg book).", show_default=False)] = None,
        skip_coherence: Annotated[bool, typer.Option(
            "--skip-coherence", help="Skip llama-benchy's check that the model answers "
            "'Paris' to a question (a test double cannot).")] = False,
        api_key_env: Annotated[str, typer.Option(
            "--api-key-env", help="Environment variable holding the endpoint's API key; it "
            "reaches llama-benchy through its environment, never its command line.")
        ] = "VLLM_API_KEY",
        output: Annotated[Path, typer.Option(
            "--output", "-o", help="Folder for the results (JSON, CSV, llama-benchy's log).")
        ] = Path("dgxcluster-bench"),
        compare: Annotated[Optional[Path], typer.Option(  # noqa: UP045
            "--compare", help="An earlier result (or a llama-benchy JSON report): print "
            "new/old per cell.", show_default=False)] = None,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Ask the endpoint what it serves, print llama-benchy's command "
            "line, run nothing.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Benchmark the endpoint with llama-benchy, the community's tool (optional extra:
        `pip install 'dgxcluster[bench]'`).

        Sweeps prompt processing (pp) and token generation (tg) over context depths and
        concurrency levels, with a progress bar, and prints one row per cell: pp and tg
        tokens/s (in total over the concurrent requests; tg also per request) and time to
        first token. Saves `bench-<UTC time>.json` (with what was measured and llama-benchy's
        own report) and `.csv` under `--output`. Ctrl-C stops it and keeps the cells already
        measured. Exit 0 when every cell was measured, 1 when the run failed or missed cells,
        2 for bad options or when llama-benchy is not installed, 130 when interrupted.
        """
        import os

        from dgxcluster.bench import presets, results, tool
        from dgxcluster.errors import UsageError
        from dgxcluster.secrets import Secret

        if quick and standard:
            raise UsageError("choose one preset", "--quick/--standard")
        preset = "standard" if standard else "quick"
        ints = presets.parse_ints
        sweep = presets.build(preset, ints("--pp", pp), ints("--tg", tg), ints("--depth", depth),
                              ints("--concurrency", concurrency), runs or None)
        from dgxcluster.bench.run import BenchSpec, split_url

        if url is not None:
            split_url(url)
        if book_url is not None:
            split_url(book_url, "--book-url")
        old = results.load(compare) if compare is not None else None
        key_value = os.environ.get(api_key_env)
        if api_key_env != "VLLM_API_KEY" and not key_value:
            raise UsageError(f"${api_key_env} is not set", "--api-key-env")
        api_key = Secret(key_value, api_key_env) if key_value else None
        bench_tool = None if dry_run else tool.find()

        def make_spec(target: Target, key: Secret | None, measured: dict[str, object],
                      notes: list[str]) -> BenchSpec:
            return BenchSpec(url=target.url, preset=preset, sweep=sweep, model=model,
                             tokenizer=tokenizer, book_url=book_url,
                             skip_coherence=skip_coherence, api_key=key, measured=measured,
                             notes=tuple(notes))

        if url is None:
            from dgxcluster.core.endpoint import api_url

            url = api_url(state(ctx).inventory())
            if not dry_run:
                assert bench_tool is not None
                outcome = _on_cluster(ctx, url, model, (api_key, api_key_env), bench_tool,
                                      output, make_spec)
                _finish(outcome, output, old, json_out)
                return
        target = _resolve(url, model, api_key)
        if dry_run:
            import shlex

            command = tool.argv("llama-benchy", target.url, sweep, target.model, target.served,
                                output / "REPORT.json", tokenizer, book_url, skip_coherence)
            typer.echo(shlex.join(["llama-benchy", *tool.options(command)]))
            if api_key is not None:
                typer.echo(f"# API key: from ${api_key_env}, through llama-benchy's environment")
            typer.echo(f"# {len(sweep.cells())} cell(s), {sweep.requests()} measured request(s)")
            return
        assert bench_tool is not None
        outcome = _run(make_spec(target, api_key, {}, []), target, bench_tool, output)
        _finish(outcome, output, old, json_out)


def _on_cluster(ctx: typer.Context, url: str, model: str | None,
                key: tuple[Secret | None, str], bench_tool: Tool, output: Path,
                make_spec: Callable[[Target, Secret | None, dict[str, object], list[str]],
                                    BenchSpec]) -> Outcome:
    """Against the inventory's cluster, in one session: what it runs (bench.measured), the
    API key its secrets hold when the environment has none, then the run, through the head's
    SSH connection (a local port forward) when this machine does not reach the endpoint
    (serve.endpoint_via, as status and smoke)."""
    import contextlib
    from dataclasses import replace
    from urllib.parse import urlsplit

    from dgxcluster.bench.measured import collect
    from dgxcluster.bench.run import resolve
    from dgxcluster.core.endpointroute import SSH, session_route
    from dgxcluster.core.forward import LocalForward

    api_key, api_key_env = key
    with state(ctx).session("bench") as session:
        measured, notes = collect(session)
        named = session.inventory.serve.api_key
        api_key = (api_key or session.secrets.get(api_key_env)
                   or (session.secrets.get(named) if named else None))
        route = session_route(session, api_key)
        target = resolve(url, model, route.get)
        with contextlib.ExitStack() as stack:
            opener = route.opener() if route.via == SSH else None
            if opener is not None:
                fwd = stack.enter_context(LocalForward(opener))
                local = urlsplit(target.url)._replace(netloc=fwd.url_host).geturl()
                target = replace(target, connect_url=local)
                notes.append(f"measured through SSH to {session.inventory.head_name} (the "
                             f"endpoint does not answer from this machine): llama-benchy used "
                             f"a local port forward, {local}")
            return _run(make_spec(target, api_key, measured, notes), target, bench_tool, output)


def _resolve(url: str, model: str | None, api_key: Secret | None) -> Target:
    from dgxcluster.bench.run import resolve
    from dgxcluster.core import endpoint

    return resolve(url, model, endpoint.getter(api_key))


def _stem(directory: Path) -> str:
    import time

    stem = time.strftime("bench-%Y%m%d-%H%M%S", time.gmtime())
    n = 1
    candidate = stem
    while (directory / f"{candidate}.json").exists():
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def _run(spec: BenchSpec, target: Target, bench_tool: Tool, output: Path) -> Outcome:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dgxcluster.bench.run import run
    from dgxcluster.cli.output import console
    err = console(stderr=True)
    via = f" (through {target.connect_url})" if target.connect_url else ""
    err.print(f"llama-benchy {bench_tool.version} -> {target.url}{via}  model {target.served}  "
              f"({len(spec.sweep.cells())} cells, {spec.sweep.requests()} requests)")
    interrupt_on_signals()
    stem = _stem(output)
    if not err.is_terminal:
        seen: list[CellKey] = []

        def lines(t: Tracker) -> None:
            while len(seen) < len(t.finished):
                cell = t.finished[len(seen)]
                seen.append(cell)
                err.print(f"measured {cell.label()}  ({len(seen)}/{len(spec.sweep.cells())} "
                          f"cells, {t.done}/{t.total} requests)")

        return run(spec, target, bench_tool, output, stem, lines)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("warming up", total=spec.sweep.requests())

        def update(t: Tracker) -> None:
            label = t.cell.label() if t.cell else "warming up"
            bar.update(task, completed=t.done, description=label)

        return run(spec, target, bench_tool, output, stem, update)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(result: BenchResult) -> None:
    from rich.table import Table

    from dgxcluster.cli.reportout import report_console

    t = Table(title=f"{result.served_model} at {result.endpoint} (llama-benchy "
              f"{result.tool.get('version')}, {result.preset})", title_justify="left")
    for col in ("pp", "tg", "depth", "conc", "pp t/s", "tg t/s", "tg t/s/req", "peak t/s",
                "TTFT ms"):
        t.add_column(col, justify="right")
    for c in result.cells:
        t.add_row(str(c.key.pp), str(c.key.tg), str(c.key.depth), str(c.key.concurrency),
                  _fmt(c.get("pp_tps")), _fmt(c.get("tg_tps")), _fmt(c.get("tg_tps_req")),
                  _fmt(c.get("peak_tps")), _fmt(c.get("ttft_ms"), 0))
    report_console().print(t)


def _comparison(cmp: Comparison, old: BenchResult) -> None:
    from rich.table import Table

    from dgxcluster.cli.reportout import report_console

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    t = Table(title=f"new / old (old: {old.started or 'llama-benchy report'}; tokens/s: "
              "above 1 is faster; TTFT: below 1 is faster)", title_justify="left")
    for col in ("pp", "tg", "depth", "conc", "pp t/s", "tg t/s", "TTFT"):
        t.add_column(col, justify="right")
    for r in cmp.ratios:
        t.add_row(str(r.key.pp), str(r.key.tg), str(r.key.depth), str(r.key.concurrency),
                  ratio(r.pp_tps), ratio(r.tg_tps), ratio(r.ttft_ms))
    out = report_console()
    out.print(t)
    for label, keys in (("only in the old run", cmp.only_old), ("only in the new run", cmp.only_new)):
        if keys:
            out.print(f"{label}: " + ", ".join(k.label() for k in keys))


def _finish(outcome: Outcome, output: Path, old: BenchResult | None, json_out: bool) -> None:
    import json
    import sys

    from dgxcluster.bench import results
    from dgxcluster.cli.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

    result = outcome.result
    if not result.cells:
        sys.stderr.write("error: interrupted before any cell was measured; nothing saved\n")
        raise typer.Exit(EXIT_INTERRUPTED)
    json_path, csv_path = results.save(result, output, outcome.log.stem)
    if json_out:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        _table(result)
        if old is not None:
            _comparison(results.compare(old, result), old)
    for note in result.notes:
        sys.stderr.write(f"note: {note}\n")
    sys.stderr.write(f"saved {json_path} and {csv_path} (llama-benchy's log: {outcome.log})\n")
    if outcome.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK if result.complete else EXIT_FAILED)
