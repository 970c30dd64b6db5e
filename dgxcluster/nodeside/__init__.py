"""Programs that run on the nodes, not on the operator's machine.

Standard library only (nccl_probe also uses the container's torch), no dgxcluster imports:
each is shipped to a node and run there with the node's own python3.
"""
