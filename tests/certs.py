"""Throwaway certificate authorities for TLS tests, their PEM files in a temporary directory.

trustme makes the keys and certificates in memory (no openssl run, nothing cached between
tests); this module only names the files the app's settings point at.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Issued:
    """A leaf certificate (valid for server and client use) and its key, as files."""

    cert: Path
    key: Path
    leaf: trustme.LeafCert

    def present_in(self, context: ssl.SSLContext) -> None:
        """Make `context` show this certificate in its handshakes."""
        self.leaf.configure_cert(context)


class CertificateAuthority:
    """A CA whose bundle is written to `directory`; issues leaf certificates there."""

    def __init__(self, directory: Path, name: str) -> None:
        self._ca = trustme.CA(organization_name=name)
        self._directory = directory
        self._name = name
        self.bundle = directory / f"{name}-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.bundle))

    def issue(self, name: str, *identities: str) -> Issued:
        """A certificate for `identities` (host names or IP addresses), with its key."""
        leaf = self._ca.issue_cert(*identities, common_name=name)
        cert = self._directory / f"{self._name}-{name}.pem"
        key = self._directory / f"{self._name}-{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return Issued(cert=cert, key=key, leaf=leaf)

    def trust_in(self, context: ssl.SSLContext) -> None:
        """Make `context` accept certificates this CA signed."""
        self._ca.configure_trust(context)
