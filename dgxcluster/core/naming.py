"""Names and labels shared by every capability, so `status`, `stop` and `logs` find what
`build` and `start` made. Change them here only."""

from __future__ import annotations

import re

LABEL_CLUSTER = "dgxcluster.cluster"
LABEL_ROLE = "dgxcluster.role"  # head | worker | verify
LABEL_NODE = "dgxcluster.node"
LABEL_CONFIG = "dgxcluster.config"  # hash of everything that shapes the running cluster
LABEL_EXECUTOR = "dgxcluster.executor"  # ray | native: how vLLM spans the nodes
LABEL_CONTENT_TAG = "dgxcluster.content-tag"  # on images: ctx-<12 hex>
LABEL_IMAGE = "dgxcluster.image"  # on images: the repository `build` built them as

CONTENT_TAG_PREFIX = "ctx-"
PULL_TAG_PREFIX = "pull-"  # an image.source: pull image: pull-<12 hex of its reference>
MOVING_TAG = "current"  # points at the newest content tag built by dgxcluster


#: The role label of verify-ib's short-lived measurement containers.
VERIFY_ROLE = "verify"
#: What verify-ib measures in its containers, one container name each.
VERIFY_JOBS = ("tools", "ibw-server", "ibw-client", "nccl")


def container_name(cluster: str, role: str) -> str:
    """One dgxcluster container per node: `dgxc-<cluster>-head` or `dgxc-<cluster>-worker`."""
    return f"dgxc-{cluster}-{role}"


#: Where `serve.persist` puts its systemd system units (systemd.unit(5): the admin's units).
UNIT_DIR = "/etc/systemd/system"


def unit_name(cluster: str) -> str:
    """`serve.persist`'s systemd unit on every node: `dgxcluster-<cluster>.service`."""
    return f"dgxcluster-{cluster}.service"


def unit_path(cluster: str) -> str:
    """Where that unit's file lives on a node."""
    return f"{UNIT_DIR}/{unit_name(cluster)}"


def verify_container(cluster: str, job: str) -> str:
    """verify-ib's measurement container for `job` (one of VERIFY_JOBS)."""
    return f"dgxc-{cluster}-verify-{job}"


def model_pull_container(cluster: str) -> str:
    """`model pull`'s download container on the head (unlabelled: not part of the cluster)."""
    return f"dgxc-{cluster}-model-pull"


def cluster_filter(cluster: str) -> list[str]:
    """`docker ps` filter arguments that select this cluster's containers."""
    return ["--filter", f"label={LABEL_CLUSTER}={cluster}"]


def is_content_tag(tag: str) -> bool:
    """`ctx-<12 hex>` (built) or `pull-<12 hex>` (pulled): the tags that name an image."""
    return re.fullmatch(r"(?:ctx|pull)-[0-9a-f]{12}", tag) is not None


def is_pull_tag(tag: str) -> bool:
    return tag.startswith(PULL_TAG_PREFIX) and is_content_tag(tag)


def image_check_container(cluster: str) -> str:
    """`build`'s short-lived container that asks a pulled image for its Ray version."""
    return f"dgxc-{cluster}-image-check"
