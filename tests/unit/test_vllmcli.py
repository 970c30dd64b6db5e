"""vLLM's `vllm serve` command line as data: the committed snapshots, the parser rebuilt from
them, and the checker for inventory/recipe flags. Each snapshot carries the real vLLM parser's
answers to probe values and argv fragments (scripts/vllm_cli_dump.py); the emulation must agree."""

from __future__ import annotations

import contextlib
import io

import pytest

from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.inventory import parse_inventory
from dgxcluster.nodeside import vllm_argparse
from dgxcluster.serving import plan
from dgxcluster.vllmcli import snapshot
from dgxcluster.vllmcli.validate import Fragment, check, delegated_checks, errors, raise_for

VERSIONS = snapshot.available()
GENERATED = ["Qwen/Qwen3-0.6B", "--tensor-parallel-size", "2", "--distributed-executor-backend", "ray",
             "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "4096"]


def extra(argv: list[str], version: str = "0.20.1", generated: list[str] | None = None) -> list[str]:
    """The messages users see for serve.extra_args = argv (errors only)."""
    snap = snapshot.load(version)
    return [str(p) for p in errors(check(snap, [Fragment("serve.extra_args", argv)],
                                         generated=GENERATED if generated is None else generated))]


def test_the_default_images_vllm_and_the_newest_release_have_snapshots() -> None:
    assert "0.20.1" in VERSIONS  # NGC nvcr.io/nvidia/vllm:26.05-py3
    assert len(VERSIONS) >= 2


@pytest.mark.parametrize("version", VERSIONS)
def test_every_snapshot_loads_and_says_how_it_was_made(version: str) -> None:
    snap = snapshot.load(version)
    assert snap.version == version
    assert len(snap.options) > 150
    assert snap.produced["by"] == f"scripts/vllm-cli-snapshot {version}"
    assert "nothing is stubbed" in snap.produced["how"].lower() or "stub" in snap.produced["how"]
    # the core of what dgxcluster generates is there in every release
    for dest in ("tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend",
                 "host", "port", "max_model_len", "gpu_memory_utilization", "served_model_name"):
        assert dest in snap.options, dest
    assert "-tp" in snap.flags and "--no-enable-prefix-caching" in snap.flags


def test_an_unknown_version_lists_the_snapshots_there_are() -> None:
    with pytest.raises(UsageError, match=r"no snapshot of vLLM 9\.9\.9.*have: 0\.20\.1.*vllm-cli-snapshot"):
        snapshot.load("9.9.9")


@pytest.mark.parametrize("version", VERSIONS)
def test_the_checker_agrees_with_vllms_parser_on_every_recorded_fragment(version: str) -> None:
    snap = snapshot.load(version)
    disagree = []
    for case in snap.table["conformance"]:
        ours = errors(check(snap, [Fragment("x", case["argv"])], generated=["some/model"]))
        if bool(ours) == case["ok"]:
            disagree.append((case["argv"], case, [str(p) for p in ours]))
    assert disagree == []


@pytest.mark.parametrize("version", VERSIONS)
def test_the_checker_agrees_with_vllms_parser_on_every_probe_value(version: str) -> None:
    snap = snapshot.load(version)
    disagree = []
    delegated = delegated_checks(snap)
    for opt in snap.table["options"]:
        if opt["dest"] in delegated:
            continue  # checked by a function validate() calls (a file on vLLM's disk...): a warning
        for value, ok in opt.get("probes", []):
            argv = [opt["option_strings"][0], value]
            ours = errors(check(snap, [Fragment("x", argv)], generated=["some/model"]))
            if bool(ours) == ok:
                disagree.append((argv, ok, [str(p) for p in ours]))
    assert disagree == []


@pytest.mark.parametrize("version", VERSIONS)
def test_the_rebuilt_parser_fails_an_unknown_flag_exactly_as_vllm_does(version: str) -> None:
    snap = snapshot.load(version)
    real = snap.table["unrecognized_example"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        vllm_argparse.parse_serve(snap.table, ["some/model", "--no-such-flag-xyz", "1"])
    assert exit_info.value.code == real["exit"] == 2
    assert err.getvalue() == real["stderr"]
    assert "unrecognized arguments: --no-such-flag-xyz 1" in err.getvalue()


def test_a_removed_flag_is_refused_naming_the_key_and_the_release() -> None:
    (msg,) = extra(["--swap-space", "4"])
    assert msg.startswith(
        "serve.extra_args: --swap-space: vLLM 0.20.1's `vllm serve` has no option --swap-space")
    (msg,) = extra(["--disable-log-requests"])
    assert "has no option --disable-log-requests" in msg and "did you mean" in msg
    assert "--enable-log-requests" in msg


def test_a_misspelt_flag_gets_a_did_you_mean() -> None:
    (msg,) = extra(["--enforce-eagre"])
    assert "did you mean --enforce-eager" in msg


def test_vllms_spellings_are_accepted() -> None:
    assert extra(["--enforce_eager", "--kv_cache_dtype=fp8", "--no-enable-prefix-caching", "-O3",
                  "--max-num-seqs=4", "--compilation-config", '{"cudagraph_mode": "PIECEWISE"}',
                  "--compilation-config.pass_config.fuse_allreduce_rms", "true"]) == []


def test_repeating_a_generated_flag_is_refused_naming_the_key_to_set() -> None:
    (msg,) = extra(["-tp", "4"])
    assert msg == ("serve.extra_args: -tp: dgxcluster already passes --tensor-parallel-size "
                   "(from serve.tensor_parallel_size); set serve.tensor_parallel_size instead of "
                   "repeating it here")
    (msg,) = extra(["--max_model_len=8192"])
    assert "(from serve.max_model_len)" in msg
    (msg,) = extra(["--distributed-executor-backend", "mp"])
    assert "(from serve.executor (ray, or mp for native))" in msg


def test_the_native_executors_flags_are_dgxclusters_own() -> None:
    """With serve.executor native, dgxcluster passes --nnodes, --node-rank, --master-addr,
    --master-port and --headless itself (every one known to each snapshot): repeating one in
    serve.extra_args names the key behind it."""
    inv = parse_inventory(
        "nodes:\n  - {name: a, host: a, fabric_ip: 10.0.0.1}\n  - {name: b, host: b, "
        "fabric_ip: 10.0.0.2}\nserve: {model: org/m, executor: native}\n", environ={})
    for version in VERSIONS:
        for node in ("a", "b"):
            generated = plan.serve_command(inv, node)[2:]
            assert extra([], version, generated) == []  # every flag exists in that release
    headless = plan.serve_command(inv, "b")[2:]
    for argv, key in ((["--nnodes", "3"], "node count"), (["-r", "1"], "inventory order"),
                      (["--master-addr", "x"], "fabric_ip"), (["--master-port", "1"],
                                                              "serve.master_port"),
                      (["--headless"], "every node but the head")):
        (msg,) = extra(argv, generated=headless)
        assert key in msg, msg


def test_the_model_and_help_are_refused_in_extra_args() -> None:
    (msg,) = extra(["--model", "other/model"])
    assert "passes the model as `vllm serve MODEL` (from serve.model)" in msg
    (msg,) = extra(["--help"])
    assert "print its help and exit" in msg


def test_wrong_choices_types_and_counts_are_refused() -> None:
    (msg,) = extra(["--kv-cache-dtype", "fp9"])
    assert "invalid choice 'fp9'" in msg and "fp8" in msg
    (msg,) = extra(["--max-num-seqs", "many"])
    assert "invalid value 'many'" in msg
    (msg,) = extra(["--max-num-seqs"])
    assert "expects one value" in msg
    (msg,) = extra(["--enforce-eager=yes"])
    assert "takes no value" in msg
    (msg,) = extra(["--compilation-config", "{bad"])
    assert "invalid value '{bad'" in msg and "JSON" in msg


def test_a_json_option_with_an_unknown_field_is_refused() -> None:
    (msg,) = extra(["--compilation-config", '{"cudagraph_mod": "PIECEWISE"}'])
    assert "unknown field(s) of CompilationConfig: cudagraph_mod" in msg
    (msg,) = extra(["--compilation-config.cudagraph_mod", "PIECEWISE"])
    assert "CompilationConfig has no field 'cudagraph_mod'" in msg and "did you mean cudagraph_mode" in msg


def test_known_invalid_combinations_are_refused_with_vllms_reason() -> None:
    (msg,) = extra(["--enable-auto-tool-choice"])
    assert msg.startswith("serve.extra_args: --enable-auto-tool-choice: needs --tool-call-parser")
    assert "Error: --enable-auto-tool-choice requires --tool-call-parser" in msg
    assert extra(["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]) == []
    snap = snapshot.load("0.20.1")
    # the parser may come from another place (a recipe's flags beside the inventory's)
    assert errors(check(snap, [Fragment("recipe x: flags", ["--enable-auto-tool-choice"]),
                               Fragment("serve.extra_args", ["--tool-call-parser", "hermes"])],
                        generated=GENERATED)) == []


def test_a_chat_template_path_is_a_warning_as_only_the_node_can_check_it() -> None:
    snap = snapshot.load("0.20.1")
    (p,) = check(snap, [Fragment("serve.extra_args", ["--chat-template", "/t/tool.jinja"])],
                 generated=GENERATED)
    assert p.severity == "warning" and "exists in the container" in p.message
    assert "validate_chat_template" in p.message
    assert check(snap, [Fragment("serve.extra_args", ["--chat-template", "{{ messages }}"])],
                 generated=GENERATED) == []


def test_headless_with_api_servers_is_refused_as_vllm_serve_does() -> None:
    (msg,) = extra(["--headless", "--api-server-count", "2"])
    assert "--api-server-count cannot be used with --headless" in msg
    assert extra(["--headless"]) == []


def test_a_generated_flag_the_release_lacks_is_reported() -> None:
    (msg,) = extra([], generated=[*GENERATED, "--no-such-generated-flag"])
    assert msg.startswith("dgxcluster's own flags: --no-such-generated-flag: vLLM 0.20.1's")


def test_values_after_double_dash_and_stray_values_are_refused() -> None:
    (msg,) = extra(["--", "--enforce-eager"])
    assert "reads no options after `--`" in msg
    (msg,) = extra(["bare"])
    assert "a value with no option before it" in msg


def test_the_same_flag_twice_in_one_place_is_a_warning_across_places_an_error() -> None:
    snap = snapshot.load("0.20.1")
    probs = check(snap, [Fragment("serve.extra_args", ["--max-num-seqs", "4", "--max-num-seqs", "8"])],
                  generated=GENERATED)
    assert [(p.severity, "given twice" in p.message) for p in probs] == [("warning", True)]
    probs = check(snap, [Fragment("recipe r: flags", ["--max-num-seqs", "4"]),
                         Fragment("serve.extra_args", ["--max-num-seqs", "8"])], generated=GENERATED)
    assert [str(p) for p in errors(probs)] == [
        "serve.extra_args: --max-num-seqs: also set in recipe r: flags (--max-num-seqs)"]


def test_an_abbreviation_vllm_accepts_is_a_warning() -> None:
    snap = snapshot.load("0.20.1")
    probs = check(snap, [Fragment("serve.extra_args", ["--enforce-eag"])], generated=GENERATED)
    assert [p.severity for p in probs] == ["warning"]
    assert "abbreviation as --enforce-eager" in probs[0].message


def test_raise_for_is_an_inventory_error_naming_file_key_and_flag() -> None:
    snap = snapshot.load("0.20.1")
    probs = check(snap, [Fragment("serve.extra_args", ["--swap-space", "4", "-tp", "2"])],
                  generated=GENERATED)
    with pytest.raises(InventoryError) as e:
        raise_for(probs, "inventory/cluster.yaml")
    text = str(e.value)
    assert text.splitlines()[0].startswith("inventory/cluster.yaml: serve.extra_args: --swap-space:")
    assert "inventory/cluster.yaml: serve.extra_args: -tp: dgxcluster already passes" in text
    raise_for([p for p in probs if p.severity == "warning"], "x")  # warnings never raise


def test_preprocess_rewrites_as_flexible_argument_parser_does() -> None:
    pre = vllm_argparse.preprocess
    assert pre(["--max_model_len=4k"]) == ["--max-model-len=4k"]
    assert pre(["-O3"]) == ["--optimization-level", "3"]
    assert pre(["-O=2"]) == ["--optimization-level", "2"]
    assert pre(["-O", "1"]) == ["--optimization-level", "1"]
    assert pre(["--hf_overrides.rope_scaling.factor", "2", "--x"]) == [
        "--x", "--hf-overrides", '{"rope_scaling": {"factor": 2}}']
    assert pre(["--cfg.a+", "x,y", "--cfg.a+=z"]) == ["--cfg", '{"a": ["x", "y", "z"]}']
    assert pre(["--cfg.size", "1k"]) == ["--cfg", '{"size": 1000}']


def test_human_readable_integers_follow_vllm() -> None:
    assert vllm_argparse.human_readable_int("1k") == 1000
    assert vllm_argparse.human_readable_int("1K") == 1024
    assert vllm_argparse.human_readable_int("25.6k") == 25600
    assert vllm_argparse.human_readable_int_or_auto("auto") == -1
    with pytest.raises(Exception, match="Decimals are not allowed"):
        vllm_argparse.human_readable_int("1.5K")
