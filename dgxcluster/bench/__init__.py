"""`dgxcluster bench`: the community's benchmark, llama-benchy, against an OpenAI-compatible
endpoint, with its results kept as cells (prompt size, generation length, context depth,
concurrency) in JSON and CSV beside what was measured, and compared run against run.

llama-benchy is an optional extra (`pip install 'dgxcluster[bench]'`); it runs as its own
process, so nothing here imports it.
"""
