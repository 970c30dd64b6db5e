"""dgxcluster: run a small cluster of DGX Spark machines as one vLLM server, over SSH."""

__version__ = "0.1.0"
