"""Facts: a command (argv) plus a pure parser of its output, tested on real captures.

Parsers never raise on unexpected output; they return a result that says
"could not parse <command>" so callers can report it.
"""
