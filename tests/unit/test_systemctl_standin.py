"""The testbed's systemctl double: what dgxcluster calls, with systemd's exit codes and
messages, on a unit directory of its own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SRC = Path(__file__).resolve().parents[2] / "scripts" / "testbed_lib" / "systemctl_standin.py"
UNIT = """\
[Unit]
Description=x
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 "/root/a b/x.pyz" boot /root/plan%%.json
[Install]
WantedBy=multi-user.target
"""


@pytest.fixture
def sc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("systemctl_standin", SRC)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["systemctl_standin"] = mod
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "DIR", tmp_path)
    return mod


def test_enable_links_into_wanted_by_and_is_enabled_says_so(
        sc: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sc.main(["is-enabled", "d.service"]) == 4
    assert capsys.readouterr().out == "not-found\n"
    (tmp_path / "d.service").write_text(UNIT)
    assert sc.main(["is-enabled", "d.service"]) == 1
    assert capsys.readouterr().out == "disabled\n"
    assert sc.main(["daemon-reload"]) == 0
    assert sc.main(["enable", "d.service"]) == 0
    link = tmp_path / "multi-user.target.wants" / "d.service"
    assert link.is_symlink() and Path(link.readlink()) == tmp_path / "d.service"
    assert "Created symlink" in capsys.readouterr().err
    assert sc.main(["enable", "d.service"]) == 0  # again: nothing to do, silent
    assert capsys.readouterr().err == ""
    assert sc.main(["is-enabled", "d.service"]) == 0
    assert capsys.readouterr().out == "enabled\n"
    assert sc.main(["is-enabled", "--quiet", "d"]) == 0  # a bare name means NAME.service
    assert capsys.readouterr().out == ""
    assert sc.main(["disable", "d.service"]) == 0
    assert not link.exists() and "Removed" in capsys.readouterr().err
    assert sc.main(["is-enabled", "d.service"]) == 1


def test_missing_units_and_other_verbs_fail_as_systemctl(
        sc: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert sc.main(["enable", "nope.service"]) == 1
    assert "Unit file nope.service does not exist." in capsys.readouterr().err
    assert sc.main(["start", "nope.service"]) == 1
    assert "only daemon-reload" in capsys.readouterr().err


def test_exec_start_words_are_unquoted_and_unescaped(sc: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "d.service").write_text(UNIT)
    svc = sc._service(tmp_path / "d.service")
    import shlex
    assert [sc._unescape(w) for w in shlex.split(svc["ExecStart"])] == [
        "/usr/bin/python3", "/root/a b/x.pyz", "boot", "/root/plan%.json"]
