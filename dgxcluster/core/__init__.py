"""The shared domain floor under every capability: one answer to each shared question.

Session, per-node outcomes, progress, names and labels (`naming`), node paths
(`nodepaths`), which image the nodes run (`imageid`, from `buildcontext` + `dockerignore`),
the endpoint and its one HTTP stack (`endpoint`, `httpclient`), the one `docker run` builder
(`dockerrun`) and shared docker calls (`docker`), the container environment
(`containerenv`), sizes (`units`), durations, node-to-node relay. Capabilities import from
here and never from each other; this package imports only `remote`, `facts`, `inventory`
and the base modules.
"""
