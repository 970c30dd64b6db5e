"""Node-to-node streaming (images, model files) over the fabric, never via the operator."""

from dgxcluster.transfer.relay import RelayResult, TargetOutcome, ensure_agent, relay

__all__ = ["RelayResult", "TargetOutcome", "ensure_agent", "relay"]
