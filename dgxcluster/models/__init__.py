"""Model weights on every node: pull once on the head, copy node to node, verify, check.

Pure parts: `repoid` (hub id rules), `layout` (a node's cache entry and blob states),
`plan` (what a peer lacks), `presence` (complete/verified across nodes). Node-side:
`dgxcluster.nodeside.hfcache` (shipped to nodes). Orchestration: `sync`, `copy`, `pull`, `check`.
"""
