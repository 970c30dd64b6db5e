"""`dgxcluster metrics`: the scrape targets a user's own Prometheus needs for vLLM and Ray
(`targets`). Reading vLLM's `/metrics` is shared with `status` and lives in the floor:
`facts.vllm_metrics` (the parser and the summary) and `core.servingmetrics` (the scrape).
"""
