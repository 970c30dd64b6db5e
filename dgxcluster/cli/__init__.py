"""The command line: parses options, calls the Python API, prints. Nothing else lives here.

Process-wide: pydantic's plugin discovery is off unless the environment says otherwise.
pydantic looks for plugins (the `pydantic` entry-point group) by reading the metadata of
every installed distribution when the first model is built, ~35 ms of each command's
start-up; dgxcluster uses none, and an operator who wants one can set
PYDANTIC_DISABLE_PLUGINS themselves (an empty value lets them load again).
"""

import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
