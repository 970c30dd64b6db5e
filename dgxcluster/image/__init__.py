"""Image builds: content-addressed tags, build on each node or once and distribute."""
