"""Programs that run on the nodes, not on the operator's machine.

Standard library only (nccl_probe also uses the container's torch), no imports from the
rest of dgxcluster: `dgxcluster.core.ship` packs this package into one content-addressed
zipapp, put on a node when missing and run there with the node's own python3 as
`python3 <state_dir>/<cluster>/bin/nodeside-<hash>.pyz PROGRAM ARGS...` (`__main__.py`).
Programs import each other relatively (`from . import framing`).
"""
