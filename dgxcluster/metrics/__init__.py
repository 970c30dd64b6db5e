"""Serving metrics: vLLM's Prometheus `/metrics` read into a summary (`serving`), the
quantile arithmetic Prometheus uses on histograms (`histogram`), and the scrape targets a
user's own Prometheus needs for vLLM and Ray (`targets`).
"""
