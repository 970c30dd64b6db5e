#!/usr/bin/env python3
"""Build-time check (optional) that the HF token may read a gated model; downloads nothing.

Usage: dgxcluster-hf-access-check [ORG/MODEL]. Does nothing without a model. The token comes
from the BuildKit secret file /run/secrets/HF_TOKEN (never an ARG or ENV) and is never
printed. Fails the build with a clear reason, rather than `start` 10 minutes in.
"""

import sys
import urllib.error
import urllib.request

SECRET = "/run/secrets/HF_TOKEN"


def main(argv: list[str]) -> int:
    model = argv[1].strip() if len(argv) > 1 else ""
    if not model:
        return 0
    try:
        with open(SECRET) as fh:
            token = fh.read().strip()
    except OSError:
        token = ""
    req = urllib.request.Request(f"https://huggingface.co/api/models/{model}/revision/main")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30):  # noqa: S310 - fixed https URL
            print(f"hf-access-check: {model} is readable")
            return 0
    except urllib.error.HTTPError as e:
        why = {401: "the token is missing or invalid", 403: "the token may not read this gated model",
               404: "no such model (or it is private)"}.get(e.code, f"HTTP {e.code}")
        print(f"hf-access-check: {model}: {why}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
