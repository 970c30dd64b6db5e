"""`python -m dgxcluster` is the same as the `dgxcluster` console script."""

from dgxcluster.cli.warm import run

run()
