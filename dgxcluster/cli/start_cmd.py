"""`dgxcluster start` and `dgxcluster stop`: the Ray cluster and vLLM, up and down."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, finish, interrupt_on_signals, state

if TYPE_CHECKING:
    from dgxcluster.inventory.load import Inventory
    from dgxcluster.recipes.merge import Merged
    from dgxcluster.serving.preflight import NodeCheck
    from dgxcluster.serving.stop import StopReport


def _model_check(merged: Merged[Inventory], force: bool) -> NodeCheck | None:
    """`start`'s preflight looks for serve.model in every node's HF cache and checks that its
    weights fit each node's memory: the model check lives in `models`, and the CLI hands it to
    serving (capabilities do not import each other), inside serving's fit check."""
    from dgxcluster.models.check import start_check
    from dgxcluster.serving.fitcheck import for_inventory

    inv = merged.inventory
    if inv.serve.model is None:
        return None  # start itself says serve.model is missing
    inner = start_check(inv.serve.model, inv.serve.revision, inv.container.hf_cache, inv.head_name)
    recipe = merged.recipe
    return for_inventory(inner, inv, memory_gb=recipe.memory_gb if recipe else None,
                         recipe=recipe.name if recipe else "", force=force)


class ExecutorChoice(str, Enum):
    ray = "ray"
    native = "native"


def register(app: typer.Typer) -> None:
    @app.command("start")
    @errors_to_exit
    def start(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Print every node's commands (secrets masked); change nothing.")] = False,
        restart: Annotated[bool, typer.Option(
            "--restart", help="If a different configuration is running, stop it and start this one.")
        ] = False,
        keep_on_failure: Annotated[bool, typer.Option(
            "--keep-on-failure", help="On failure leave what was started, for inspection.")] = False,
        timeout: Annotated[
            Optional[float],  # noqa: UP045
            typer.Option("--timeout", min=1.0,
                         help="Seconds to wait for vLLM to be ready (default: serve.ready_timeout_s)."),
        ] = None,
        skip_model_check: Annotated[bool, typer.Option(
            "--skip-model-check",
            help="Start even if serve.model is not complete in every node's HF cache "
                 "(vLLM would then download it on each node, or fail offline; no fit check).")
        ] = False,
        recipe: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--recipe", metavar="NAME",
                         help="Serve this recipe (`dgxcluster recipe ls`, or a recipe file) instead "
                              "of serve.recipe; keys the inventory sets still win."),
        ] = None,
        skip_flag_check: Annotated[bool, typer.Option(
            "--skip-flag-check",
            help="Pass vLLM flags the check refuses (a flag of a newer vLLM than the snapshots); "
                 "vLLM judges them itself, and start fails fast with its log if it refuses.")
        ] = False,
        force: Annotated[bool, typer.Option(
            "--force", help="Start even if the model's weights do not fit a node's memory "
                            "(the estimate is printed; a DGX Spark can freeze when over-asked).")
        ] = False,
        drop_caches: Annotated[bool, typer.Option(
            "--drop-caches", help="Free every node's page cache first (sync; echo 3 > "
                                  "/proc/sys/vm/drop_caches), as root or through `sudo -n`; a "
                                  "node where neither works fails the preflight.")
        ] = False,
        persist: Annotated[
            Optional[bool],  # noqa: UP045
            typer.Option("--persist/--no-persist",
                         help="For this run (default: serve.persist): install on every node a "
                              "systemd unit (dgxcluster-<cluster>.service, root or `sudo -n`) "
                              "that brings this cluster back when the node boots, workers "
                              "after their head; --no-persist removes it. `stop` removes it "
                              "too. Not a configuration change: no --restart needed."),
        ] = None,
        executor: Annotated[
            Optional[ExecutorChoice],  # noqa: UP045
            typer.Option("--executor", case_sensitive=False,
                         help="How vLLM spans the nodes, for this run (default: serve.executor): "
                              "ray (a Ray cluster, vLLM in the head's container) or native "
                              "(vLLM's own executor: one `vllm serve` per node, --headless but "
                              "on the head; no Ray). A different executor than the running "
                              "one is a different configuration: --restart replaces it."),
        ] = None,
    ) -> None:
        """Start vLLM across the nodes (over Ray, or vLLM's native executor); wait until it answers.

        Stages, each reported per node: lock, preflight, env-files, then with Ray ray-head,
        ray-workers, ray-ready, vllm; native: headless (every node but the head, in
        parallel), rank0 (the head); then vllm-ready, supervise (serve.restart) and persist
        (serve.persist / --persist: each node's boot unit installed, or removed). Then
        prints the endpoint and a curl.
        Before any node is touched, every vLLM flag (a recipe's and serve.extra_args) is
        checked against the argument table of the image's vLLM release (exit 2 if vLLM would
        refuse it). Preflight also checks that serve.model (at serve.revision) is complete in
        every node's HF cache (`dgxcluster model pull|sync` put it there) and that its weights
        fit each node's memory at serve.gpu_memory_utilization (default 0.8), and that
        that share of each node's memory is available now (vLLM's own start-up check);
        for a pulled image (image.source: pull), that every node holds the same image
        and that it has Ray (with the Ray executor); native: that the ports vLLM binds on the
        head are free (serve.master_port; with serve.data_parallel_size > 1
        serve.data_parallel_rpc_port, where the replicas join the head's front end, and
        master_port only where a replica spans nodes); --dry-run lists them.
        Idempotent: the same configuration already running and healthy is left alone. A
        failure (or Ctrl-C) removes what this run created unless --keep-on-failure.
        Exit 0 ready, 1 a step failed, 2 bad inventory/options, 3 a node was unreachable.
        """
        from dgxcluster.cli.output import LiveNodes, outcome_table
        from dgxcluster.cli.servesettings import check_flags, print_settings
        from dgxcluster.image.startcheck import start_check as image_check
        from dgxcluster.serving.start import StartFailed, StartOptions
        from dgxcluster.serving.start import start as run_start

        interrupt_on_signals(sigint="terminal")  # SIGTERM/SIGHUP/Ctrl-C roll a start back
        st = state(ctx)
        st.recipe = recipe
        inv = st.inventory()
        if executor is not None:
            from dgxcluster.inventory.load import with_executor

            inv = with_executor(inv, executor.value)
            st.use(inv)
        if persist is not None and persist != inv.serve.persist:
            serve = inv.serve.model_copy(update={"persist": persist})
            inv = inv.model_copy(update={"serve": serve})
            st.use(inv)
        merged = st.merged()
        flags = check_flags(merged, skip=skip_flag_check)
        opts = StartOptions(dry_run=dry_run, restart=restart, keep_on_failure=keep_on_failure,
                            ready_timeout_s=timeout, skip_model_check=skip_model_check,
                            drop_caches=drop_caches,
                            model_check=None if skip_model_check else _model_check(merged, force),
                            image_check=image_check(inv))
        with st.session("start") as session:
            try:
                with LiveNodes(inv.names, "dgxcluster start") as live:
                    report = run_start(session, opts, live)
            except StartFailed as exc:
                outcome_table("start", exc.outcomes)
                raise
        if dry_run:
            typer.echo(f"# dry run: nothing was changed. image {report.image}, config {report.config}")
            print_settings(merged, flags)
            for title, lines in report.dry_run:
                typer.echo(f"\n# {title}")
                for line in lines:
                    typer.echo(line)
            return
        outcome_table("start", report.outcomes)
        if report.already_running:
            typer.echo(f"already running (config {report.config}); nothing changed")
        else:
            typer.echo(f"ready in {report.elapsed_s:.1f}s (vLLM loaded in {report.ready_after_s or 0:.1f}s)")
        typer.echo(f"endpoint: {report.endpoint}   model: {report.model}")
        typer.echo(f"try it:\n  {report.curl}")
        finish(report.outcomes)

    @app.command("stop")
    @errors_to_exit
    def stop(
        ctx: typer.Context,
        keep_containers: Annotated[bool, typer.Option(
            "--keep-containers", help="Leave the stopped containers for log collection.")] = False,
    ) -> None:
        """Stop vLLM, then the Ray workers, then the head; remove containers and env-files.

        vLLM gets SIGTERM and serve.stop_timeout_s to exit. Reachable nodes are cleaned even
        when others are not. Exit 0 done (or nothing to stop), 1 a step failed, 3 a node was
        unreachable (named).
        """
        from dgxcluster.cli.output import LiveNodes
        from dgxcluster.core.steps import Status
        from dgxcluster.serving.stop import stop as run_stop

        interrupt_on_signals(sigint="terminal")
        st = state(ctx)
        inv = st.inventory()
        with st.session("stop") as session, LiveNodes(inv.names, "dgxcluster stop") as live:
            report = run_stop(session, keep_containers=keep_containers, progress=live)
        _report_stop(report, len(inv.names))
        failed = [o for o in report.outcomes if o.status is Status.FAILED]
        for node in dict.fromkeys(o.node for o in failed):
            why = next(o.detail for o in failed if o.node == node).splitlines()[0]
            why = why.removeprefix(f"{node}: ")
            typer.echo(f"error: {node}: not stopped ({why}); fix it and run `dgxcluster stop` "
                       "again", err=True)
        finish(report.outcomes)


def _report_stop(report: StopReport, nodes: int) -> None:
    """What `stop` did, and the reason for each node it could not stop."""
    from dgxcluster.cli.output import outcome_table

    if report.lock_skipped:
        typer.echo(f"warning: cluster lock not taken: {report.lock_skipped}", err=True)
    if report.nothing:
        if len(report.unreachable) < nodes:
            typer.echo("nothing to stop" + (" on the reachable nodes" if report.unreachable
                                            else ""))
    else:
        outcome_table("stop", report.outcomes)
    if report.unreachable:
        for node, why in sorted(report.unreachable.items()):
            typer.echo(f"{node}: unreachable: {why}", err=True)
        names = ", ".join(sorted(report.unreachable))
        typer.echo(f"error: unreachable, not stopped: {names}; run `dgxcluster stop` again "
                   "once they are back", err=True)

