"""The shared domain floor under every capability: one answer to each shared question.

Session, per-node outcomes, progress, names and labels, node paths, the endpoint, the
container environment, node-to-node relay. Capabilities import from here and never from
each other; this package imports only `remote`, `facts`, `inventory` and the base modules.
"""
