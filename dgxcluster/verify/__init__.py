"""verify-ib: prove the RoCE fabric and the NCCL settings are right before `start`.

`verify_ib(session, nodes, bandwidth=...)` returns a `Report` of `CheckResult`s
(node, check, PASS/WARN/FAIL, evidence, one-line fix). Facts come from `dgxcluster.facts`;
the container environment checked is `dgxcluster.core.containerenv.container_env`, the one
`start` gives the containers.
"""

from dgxcluster.verify.results import CLUSTER, CheckResult, Level, Report
from dgxcluster.verify.runner import verify_ib

__all__ = ["CLUSTER", "CheckResult", "Level", "Report", "verify_ib"]
