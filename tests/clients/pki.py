"""Certificates for the TLS tests, made with the openssl command line in a directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost\n"


def _openssl(root: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)


def make_ca(root: Path, name: str = "ca") -> Path:
    """A self-signed CA valid for a day: ``<name>.pem`` and ``<name>.key`` in ``root``."""
    _openssl(
        root,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
    )
    return root / f"{name}.pem"


def issue(root: Path, name: str, ca: str = "ca") -> Path:
    """``<name>.pem``/``<name>.key`` signed by ``ca``, for 127.0.0.1 and localhost."""
    (root / "san.cnf").write_text(SAN)
    _openssl(
        root,
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
    )
    _openssl(
        root,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.cnf",
        "-out",
        f"{name}.pem",
    )
    return root / f"{name}.pem"
