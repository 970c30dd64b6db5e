"""How dgxcluster's SSH transports are made: AES-GCM offered first.

paramiko offers `aes*-ctr` with `hmac-sha2-*` first. Its MAC is computed per packet in the
transport thread, and on a big transfer that, not the network, is most of the operator's
CPU: 300 MB of `exec` output took 2.3-2.9 s of CPU with aes128-ctr + hmac-sha2-256 and
1.2-1.5 s with aes128-gcm@openssh.com on the testbed (`benchmarks/exec`). AES-GCM is an AEAD
cipher that OpenSSH enables by default (ssh_config(5) `Ciphers`); a server that does not
offer it negotiates the next one as before. Nothing else about the handshake changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import paramiko

GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def transport(sock: Any, /, *, gss_kex: bool = False, gss_deleg_creds: bool = True,
              disabled_algorithms: Mapping[str, Iterable[str]] | None = None) -> paramiko.Transport:
    """`SSHClient.connect(transport_factory=...)`: a Transport offering AES-GCM first.
    paramiko 5 calls it with `disabled_algorithms` only (no GSS-API: its gss_* arguments,
    still in the type stubs, are accepted and unused)."""
    t = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
    options = t.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in GCM if c in offered) + tuple(c for c in offered if c not in GCM)
    return t
