"""Model ids and revisions: the hub's rules, and hostile input refused before any node is contacted."""

from __future__ import annotations

import shlex
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dgxcluster.errors import UsageError
from dgxcluster.models.repoid import RepoId, check_revision
from tests.conftest import run_cli


@pytest.mark.parametrize("text,folder", [
    ("Qwen/Qwen3-30B-A3B-FP8", "models--Qwen--Qwen3-30B-A3B-FP8"),
    ("gpt2", "models--gpt2"),
    ("meta-llama/Llama-3.1-8B-Instruct", "models--meta-llama--Llama-3.1-8B-Instruct"),
    ("org_1/name.v2_x", "models--org_1--name.v2_x"),
])
def test_valid_ids_and_their_cache_folders(text: str, folder: str) -> None:
    repo = RepoId.parse(text)
    assert repo.id == text
    assert repo.folder == folder
    assert RepoId.from_folder(folder) == repo


HOSTILE = [
    "org/name;rm -rf ~", "$(reboot)", "`id`", "org/'quoted'", 'org/"x"', "../etc", "org/..",
    "org/a..b", "-rf", "--help", "org/-x", "org/name\nsecond", "a/b/c", "org/name.git",
    "org--x/y", "a" * 97, "", "org/", "/name", "org/na me", "org/näme", "org/x\0y",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_ids_are_refused_naming_the_argument(text: str) -> None:
    with pytest.raises(UsageError) as err:
        RepoId.parse(text)
    assert str(err.value).startswith("MODEL: ")
    assert "\n" not in str(err.value)


@given(st.text(alphabet=string.printable, max_size=120))
def test_an_accepted_id_is_inert_in_a_shell_and_a_path(text: str) -> None:
    try:
        repo = RepoId.parse(text)
    except UsageError:
        return
    assert shlex.quote(repo.id) == repo.id
    assert "/" not in repo.folder and ".." not in repo.folder
    assert not repo.id.startswith("-")


@pytest.mark.parametrize("rev", ["main", "v1.0", "refs/pr/1", "a" * 40, "release-2024_01+x"])
def test_valid_revisions(rev: str) -> None:
    assert check_revision(rev) == rev


@pytest.mark.parametrize("rev", ["../../x", "-x", "a b", "x\n", "main/", "a//b", "x.lock",
                                 "$(id)", "a;b", "", "r" * 129, "a/.hidden"])
def test_bad_revisions_are_refused(rev: str) -> None:
    with pytest.raises(UsageError, match=r"^--revision: "):
        check_revision(rev)


@pytest.mark.parametrize("argv", [
    ["model", "sync", "org/name;reboot"],
    ["model", "sync", "--", "-rf"],
    ["model", "pull", "x/y\nz"],
    ["model", "pull", "org/x", "--revision", "../../etc/passwd"],
    ["model", "sync", "org/x", "--from", "nosuchnode"],
])
def test_cli_refuses_bad_input_with_exit_2_and_contacts_nothing(tmp_path: Path,
                                                                argv: list[str]) -> None:
    inv = tmp_path / "inv.yaml"
    # 192.0.2.0/24 is TEST-NET-1: nothing answers there, so any contact would time out
    inv.write_text("nodes:\n  - {name: n1, host: 192.0.2.1, fabric_ip: 10.9.0.1}\n"
                   "ssh: {connect_timeout: 30}\n")
    proc = run_cli("-i", str(inv), *argv, timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(("error: MODEL:", "error: --revision:", "error: --from:")), first
