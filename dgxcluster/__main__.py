"""`python -m dgxcluster` is the same as the `dgxcluster` console script."""

from dgxcluster.cli.main import run

run()
