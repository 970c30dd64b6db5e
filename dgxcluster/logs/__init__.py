"""Log collection (`dgxcluster logs`): one folder and one archive with every node's logs."""
