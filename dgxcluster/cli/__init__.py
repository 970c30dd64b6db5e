"""The command line: parses options, calls the Python API, prints. Nothing else lives here."""
