"""vLLM's `vllm serve` command line as data: committed snapshots of its argument table
(`snapshot`) and a checker for flags from the inventory and recipes (`validate`)."""
