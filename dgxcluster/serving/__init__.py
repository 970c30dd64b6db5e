"""Serving: `start` and `stop` of the Ray cluster and the vLLM server in its head container.

Names, labels and node paths come from `naming` and `nodepaths`; `status` and `logs` find
everything this package makes through them (see README, "dgxcluster start").
"""
