"""The emulated cluster (testbed): DGX-less nodes in Linux namespaces, for trying and testing.

Each node is a network namespace (management + two fabric rails on bridges), a private
mount namespace (its own /root, /tmp, /run, /usr/local/sbin) and a UTS namespace (its own
hostname), running its own sshd with its own host key, and optionally its own dockerd.
"""
