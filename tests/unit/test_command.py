"""argv quoting and secret handling: the one place commands become text."""

from __future__ import annotations

import shlex

import pytest

from dgxcluster.errors import SecretLeakError
from dgxcluster.remote.command import for_display, shell, to_command_line, with_env
from dgxcluster.secrets import MASK, Redactor, Secret, load_secrets, parse_env_file, render_env_file

HOSTILE = ["a b", "$(id)", "`id`", "x;reboot", "'", '"', "\n", "-rf", "über", "*", "a\\b"]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_survive_quoting_as_one_argument(value: str) -> None:
    line = to_command_line(["echo", value])
    assert shlex.split(line) == ["echo", value]


def test_secret_refused_on_command_line() -> None:
    with pytest.raises(SecretLeakError, match="HF_TOKEN"):
        to_command_line(["docker", "login", Secret("hf_abc", "HF_TOKEN")])


def test_display_masks_secret() -> None:
    shown = for_display(["x", Secret("hf_supersecret", "HF_TOKEN")])
    assert "hf_supersecret" not in shown
    assert MASK in shown


def test_secret_never_formats_its_value() -> None:
    s = Secret("hf_supersecret", "HF_TOKEN")
    assert "hf_supersecret" not in f"{s} {s!r} {s!s}" + str([s])
    assert s.reveal() == "hf_supersecret"


def test_shell_passes_values_positionally() -> None:
    argv = shell('echo "$1"', "$(id)")
    assert argv[:3] == ["sh", "-c", 'echo "$1"']
    assert argv[-1] == "$(id)"


def test_with_env_refuses_secrets() -> None:
    with pytest.raises(SecretLeakError):
        with_env({"HF_TOKEN": Secret("x" * 8)}, ["true"])  # type: ignore[dict-item]
    assert with_env({"A": "1"}, ["true"]) == ["env", "A=1", "true"]


def test_redactor_hides_values() -> None:
    red = Redactor()
    red.add(Secret("hf_abcdef123", "HF_TOKEN"))
    assert red("token=hf_abcdef123!") == f"token={MASK}!"
    assert red.redact_bytes(b"hf_abcdef123") == MASK.encode()


def test_env_file_roundtrip() -> None:
    data = render_env_file({"A": "1", "HF_TOKEN": Secret("hf_x1234", "HF_TOKEN")})
    assert parse_env_file(data.decode()) == {"A": "1", "HF_TOKEN": "hf_x1234"}
    with pytest.raises(ValueError, match="newline"):
        render_env_file({"A": "1\n2"})


def test_load_secrets_env_wins_and_file_mode_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "secrets.env"
    f.write_text("HF_TOKEN=from_file_123\nOTHER=zzz\n")
    f.chmod(0o600)
    assert load_secrets(["HF_TOKEN"], f, {})["HF_TOKEN"].reveal() == "from_file_123"
    got = load_secrets(["HF_TOKEN"], f, {"HF_TOKEN": "from_env_456"})
    assert got["HF_TOKEN"].reveal() == "from_env_456"
    f.chmod(0o644)
    from dgxcluster.errors import InventoryError

    with pytest.raises(InventoryError, match="chmod 600"):
        load_secrets(["HF_TOKEN"], f, {})
