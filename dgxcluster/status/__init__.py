"""Cluster status (`dgxcluster status`): one SSH round per node, plus the endpoint."""
