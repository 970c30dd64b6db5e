"""The node-side boot program (`nodeside/boot.py`): its steps in order, waits bounded by
their timeouts, the first failure ending the run; a fake clock, runner and connector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dgxcluster.nodeside import boot


class Fake:
    def __init__(self, outputs: dict[str, list[tuple[int, str]]] | None = None,
                 listening_after: int = 0) -> None:
        self.t = 0.0
        self.ran: list[list[str]] = []
        self.outputs = outputs or {}
        self.tries = 0
        self.listening_after = listening_after
        self.lines: list[str] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s

    def run(self, argv: list[str], timeout: float) -> tuple[int, str]:
        self.ran.append(argv)
        queue = self.outputs.get(argv[0], [])
        return queue.pop(0) if len(queue) > 1 else (queue[0] if queue else (0, ""))

    def connect(self, host: str, port: int, timeout: float) -> bool:
        self.tries += 1
        return self.tries > self.listening_after

    def boot(self, steps: list[dict[str, Any]]) -> boot.Boot:
        return boot.Boot({"cluster": "c", "node": "n", "config": "abc", "steps": steps},
                         run=self.run, connect=self.connect, clock=self.clock,
                         sleep=self.sleep, log=self.lines.append)


def test_steps_run_in_order_and_waits_end_when_met() -> None:
    f = Fake({"ray": [(0, " 1 node_aa\n"), (0, " 1 node_aa\n 1 node_bb\n")]}, listening_after=3)
    code = f.boot([{"wait_tcp": ["10.0.0.1", 6379], "timeout_s": 60},
                   {"run": ["docker", "start", "x"]},
                   {"wait_run": ["ray", "status"], "until_regex": r"^ *1 node_[0-9a-f]+\s*$",
                    "count": 2, "timeout_s": 60},
                   {"run": ["echo", "launched"]}]).main()
    assert code == 0
    assert f.tries == 4
    assert f.ran == [["docker", "start", "x"], ["ray", "status"], ["ray", "status"],
                     ["echo", "launched"]]
    assert f.lines[-1].startswith("boot: done")


def test_a_wait_gives_up_after_its_timeout_and_later_steps_do_not_run() -> None:
    f = Fake(listening_after=10**6)
    code = f.boot([{"wait_tcp": ["10.0.0.1", 6379], "timeout_s": 30, "what": "wait for head"},
                   {"run": ["docker", "start", "x"]}]).main()
    assert code == 1
    assert f.ran == []
    assert 30 <= f.t <= 31
    assert "FAILED step 1/2 (wait for head)" in f.lines[-1]
    assert "10.0.0.1:6379 did not accept a connection within 30s" in f.lines[-1]


def test_a_failed_run_ends_the_boot_with_its_output() -> None:
    f = Fake({"docker": [(1, "Error response from daemon: No such container: x\n")]})
    code = f.boot([{"run": ["docker", "start", "x"]}, {"run": ["true"]}]).main()
    assert code == 1
    assert f.ran == [["docker", "start", "x"]]
    assert "exit status 1: Error response from daemon: No such container: x" in f.lines[-1]


def test_wait_run_that_never_matches_says_what_it_last_saw() -> None:
    f = Fake({"ray": [(0, " 1 node_aa\n")]})
    code = f.boot([{"wait_run": ["ray", "status"], "until_regex": r"^ *1 node_[0-9a-f]+\s*$",
                    "count": 2, "timeout_s": 10}]).main()
    assert code == 1
    assert "no 2 match(es)" in f.lines[-1] and "node_aa" in f.lines[-1]


def test_main_reads_the_plan_file_and_logs_to_its_log(tmp_path: Path) -> None:
    log = tmp_path / "boot.log"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"cluster": "c", "node": "n", "config": "abc", "log": str(log),
                                "steps": [{"run": ["true"]}, {"run": ["sh", "-c", "exit 3"]}]}))
    assert boot.main([str(plan)]) == 1
    text = log.read_text()
    assert "config abc: 2 step(s)" in text and "FAILED step 2/2" in text and "exit status 3" in text
    assert boot.main([str(tmp_path / "missing.json")]) == 2
