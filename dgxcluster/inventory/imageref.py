"""An image reference as Docker reads it (`docker pull NAME[:TAG|@DIGEST]`): the grammar and
normalisation of distribution/reference (`regexp.go`, `normalize.go` `ParseNormalizedNamed`,
`reference.go` `Parse`), which docker/cli's `pull` uses, so `image.ref` is refused at load
exactly where `docker pull` would refuse it, and the registry to log in to is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = (rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[(?:[a-fA-F0-9:]+)\])"
           r"(?::[0-9]+)?")
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_REMOTE = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"((?:{_DOMAIN}/)?{_REMOTE})(?::({_TAG}))?(?:@({_DIGEST}))?")
_NAME = re.compile(rf"(?:({_DOMAIN})/)?({_REMOTE})")
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")


class ReferenceError(ValueError):
    """A reference `docker pull` would refuse; the message is distribution/reference's."""


@dataclass(frozen=True)
class ImageRef:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        """The full reference (`docker.io/library/ubuntu:24.04`), as `docker pull` prints it last."""
        return (self.name + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))

    @property
    def pulled(self) -> str:
        """What `docker pull` fetches: with `:latest` when neither tag nor digest is given."""
        if self.tag is None and self.digest is None:
            return f"{self.name}:{DEFAULT_TAG}"
        return str(self)

    @property
    def taggable(self) -> str | None:
        """The name:tag a node can carry for this image (`docker tag` refuses a digest; after
        `docker load` a pinned image has no repo digest), or None for a digest-only reference."""
        if self.digest is not None and self.tag is None:
            return None
        return f"{self.name}:{self.tag or DEFAULT_TAG}"

    @property
    def registry(self) -> str | None:
        """The server `docker login` takes for this image; None for Docker Hub (its default)."""
        return None if self.domain == DEFAULT_DOMAIN else self.domain


def parse(s: str) -> ImageRef:
    """distribution/reference `ParseNormalizedNamed` (what `docker pull` applies)."""
    if _IDENTIFIER.fullmatch(s):
        raise ReferenceError(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal "
                             "strings")
    domain, remainder = _split_domain(s)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise ReferenceError(f"invalid reference format: repository name ({remote}) must be "
                             "lowercase")
    m = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if m is None:
        raise ReferenceError(f"invalid reference format ({s!r}: REPOSITORY[:TAG][@DIGEST], "
                             "e.g. nvcr.io/nvidia/vllm:26.10-py3)")
    name, tag, digest = m.groups()
    named = _NAME.fullmatch(name)
    assert named is not None
    path = named.group(2)
    if len(path) > NAME_MAX:
        raise ReferenceError(f"repository name must not be more than {NAME_MAX} characters")
    if digest and digest.startswith("sha256:") and len(digest) != len("sha256:") + 64:
        raise ReferenceError("invalid checksum digest length")
    return ImageRef(named.group(1) or DEFAULT_DOMAIN, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    """distribution/reference `splitDockerDomain`."""
    maybe_domain, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + name
    if maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, rest
    elif maybe_domain == "localhost" or any(c in maybe_domain for c in ".:") \
            or maybe_domain.lower() != maybe_domain:
        domain, remote = maybe_domain, rest
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_PREFIX + remote
    return domain, remote
