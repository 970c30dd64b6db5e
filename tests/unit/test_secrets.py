"""Secret masking of raw output."""

from __future__ import annotations


def test_token_shapes_are_masked_in_raw_output_too() -> None:
    """exec prints node output as bytes: a token read back from a node is masked there too."""
    from dgxcluster.secrets import mask_token_shapes_bytes

    tok = b"hf_" + b"a1" * 15
    assert mask_token_shapes_bytes(b"HF_TOKEN=" + tok + b"\n") == b"HF_TOKEN=******\n"
    assert mask_token_shapes_bytes(b"hf_short\n") == b"hf_short\n"
