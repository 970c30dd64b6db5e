"""Recipes: a model with the vLLM flags, topology and environment published (and measured) for
it on DGX Sparks, as a YAML file checked against vLLM's own argument table. The built-in ones
live in `builtin/` (package data); `schema` validates a file, `catalog` finds them, `importer`
converts the community launcher's format."""
