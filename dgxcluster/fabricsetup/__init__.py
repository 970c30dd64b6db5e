"""`dgxcluster fabric plan | apply`: each node's CX-7 netplan file from the inventory.

`plan` shows, per node, the file the inventory calls for against the one the node has (a
diff) and where the live addresses and MTU differ; `apply` writes it (mode 0600), runs
`netplan apply`, checks that every link of the changed nodes answers, and rolls every
changed node back (file and live state) when one does not. The management interface is
never touched. Needs root or passwordless sudo on the nodes.
"""
