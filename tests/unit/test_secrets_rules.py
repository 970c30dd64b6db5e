"""Where secrets may live, and what dgxcluster prints about them.

The inventory holds names of secrets, never values; values come from the environment or
from `secrets.file` (mode 0600). Anything shaped like a Hugging Face token is masked in
everything the CLI prints and logs, even when this shell does not know the value.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from dgxcluster.cli.main import app
from dgxcluster.errors import InventoryError
from dgxcluster.inventory import parse_inventory
from dgxcluster.runlog import RunLogs, configure, get_logger
from dgxcluster.secrets import MASK, Redactor, load_secrets, mask_token_shapes

TOKEN = "hf_" + "Ab1" * 10
NODES = "nodes:\n  - {name: a, host: 127.0.0.1, port: 1, fabric_ip: 10.9.0.1}\n"


@pytest.mark.parametrize(("section", "entry"), [
    ("container", "env: {HF_TOKEN: hf_x}"),
    ("container", "env: {WANDB_API_KEY: abc123}"),
    ("container", "env: {MY_SECRET: s3cr3t}"),
    ("container", "env: {DB_PASSWORD: pw}"),
    ("container", f"env: {{HUB_CREDENTIAL: {TOKEN}}}"),  # any name: the value is a token
    ("fabric", "nccl_env: {NCCL_TOKEN: x1}"),
    ("image", "build_args: {HF_TOKEN: hf_x}"),
])
def test_inventory_holding_a_secret_value_is_refused_pointing_to_secrets_file(
        section: str, entry: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(f"{NODES}{section}:\n  {entry}\n", "inv.yaml", environ={})
    msg = str(info.value)
    assert f"inv.yaml:4: {section}." in msg
    assert "looks like a secret" in msg and "secrets.file" in msg and "0600" in msg
    assert TOKEN not in msg


def test_a_name_listed_in_secrets_env_cannot_get_a_value_in_the_inventory() -> None:
    text = f"{NODES}secrets: {{env: [HF_TOKEN, WANDB_KEY]}}\ncontainer:\n  env: {{WANDB_KEY: k}}\n"
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, "inv.yaml", environ={})
    assert "container.env.WANDB_KEY: WANDB_KEY is listed in secrets.env" in str(info.value)


def test_switches_named_like_secrets_are_not_secrets() -> None:
    inv = parse_inventory(f"{NODES}container:\n  env: {{HF_HUB_DISABLE_IMPLICIT_TOKEN: '1', "
                          "TOKENIZERS_PARALLELISM: 'false'}\n", environ={})
    assert inv.container.env["HF_HUB_DISABLE_IMPLICIT_TOKEN"] == "1"


def test_the_environment_override_is_checked_the_same_way() -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(NODES, "inv.yaml",
                        environ={"DGXCLUSTER_CONTAINER__ENV": f'{{"HF_TOKEN": "{TOKEN}"}}'})
    assert "DGXCLUSTER_CONTAINER__ENV" in str(info.value) and TOKEN not in str(info.value)


def test_secrets_file_must_be_0600_and_the_environment_wins(tmp_path: Path) -> None:
    f = tmp_path / "secrets.env"
    f.write_text(f"HF_TOKEN={TOKEN}\nOTHER='quoted value'\n")
    f.chmod(0o644)
    with pytest.raises(InventoryError, match="chmod 600"):
        load_secrets(["HF_TOKEN"], f, environ={})
    f.chmod(0o600)
    got = load_secrets(["HF_TOKEN", "OTHER"], f, environ={})
    assert got["HF_TOKEN"].reveal() == TOKEN and got["OTHER"].reveal() == "quoted value"
    assert str(got["HF_TOKEN"]) == MASK and TOKEN not in repr(got)
    assert load_secrets(["HF_TOKEN"], f, environ={"HF_TOKEN": "hf_fromenv"})["HF_TOKEN"].reveal() \
        == "hf_fromenv"


def test_cli_refuses_a_readable_secrets_file_before_connecting(tmp_path: Path) -> None:
    f = tmp_path / "secrets.env"
    f.write_text(f"HF_TOKEN={TOKEN}\n")
    f.chmod(0o640)
    inv = tmp_path / "inv.yaml"
    inv.write_text(f"{NODES}secrets: {{file: secrets.env}}\nssh: {{known_hosts: kh}}\n")
    env = {k: None for k in os.environ if k.startswith(("DGXCLUSTER_", "HF_"))}
    res = CliRunner().invoke(app, ["-i", str(inv), "exec", "--", "true"], env=env)
    structlog.reset_defaults()
    assert res.exit_code == 2, res.output
    assert "readable by others" in res.stderr and "chmod 600" in res.stderr
    assert TOKEN not in res.stderr + res.stdout


def test_token_shapes_are_masked_in_what_people_read_not_in_data() -> None:
    red = Redactor()
    red.add("s3cret-value")
    text = f"a {TOKEN} b s3cret-value hf_short"
    assert red.display(text) == f"a {MASK} b {MASK} hf_short"
    assert red(text) == f"a {TOKEN} b {MASK} hf_short"  # data read from nodes: values only
    assert mask_token_shapes("hf_quant_config.json") == "hf_quant_config.json"


def test_token_shapes_are_masked_in_cli_output_logs_and_log_files(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["model", "sync", f"org/{TOKEN};"],
                             env={k: None for k in os.environ if k.startswith("DGXCLUSTER_")})
    assert res.exit_code == 2 and "MODEL" in res.stderr
    assert TOKEN not in res.stderr and MASK in res.stderr
    red = Redactor()
    out = tmp_path / "stderr.log"
    with open(out, "w") as stream:
        configure(1, "json", red, stream=stream)
        get_logger(node="n1").warning("remote.run", argv=f"echo {TOKEN}")
    structlog.reset_defaults()
    logs = RunLogs.create("test", tmp_path / "runs", red)
    with logs.writer("n1", "build") as w:
        w.line(f"#5 token in build output: {TOKEN}")
    for f in (out, logs.path("n1", "build")):
        text = f.read_text()
        assert TOKEN not in text and MASK in text, f
