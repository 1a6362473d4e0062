"""The security settings of a served run, stored with its state so that a resume keeps them.

When a run starts, :func:`record` notes each of ``tls_cert``, ``tls_key``, ``client_ca``,
``allow_list`` and ``revoked`` that is set: its absolute path and the SHA-256 of its
content. On ``fedge serve --resume`` :func:`restore` fills every setting the command line
(or experiment file) leaves empty from that record, so a resume never silently drops TLS,
the allow-list or the revocation list. A stored file that has gone is a one-line error
naming it; a file given explicitly replaces the stored one (a renewed certificate, a new
allow-list). Only ``downgrade=True`` (``--downgrade-security``) resumes with fewer
protections, and then every dropped protection is named in a warning.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypedDict

from fedge.core.errors import ConfigError
from fedge.deploy.config import DeployConfig

FIELDS = ("tls_cert", "tls_key", "client_ca", "allow_list", "revoked")
OPTION = {
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
    "client_ca": "--client-ca",
    "allow_list": "--allow",
    "revoked": "--revoked",
}
PROTECTION = {
    "tls_cert": "TLS",
    "tls_key": "TLS",
    "client_ca": "mutual TLS (client CA)",
    "allow_list": "the allow-list",
    "revoked": "the revocation list",
}
NO_ALLOW_LIST = "no allow-list: every node will be refused; pass --allow FILE (the NAME.pub lines of `fedge keys new`)"
NO_TLS = (
    "no TLS (--insecure): models and updates travel in plaintext; pass --tls-cert/--tls-key "
    "(make them with `fedge certs new`)"
)
NEED_TLS = (
    "no TLS: pass --tls-cert/--tls-key (make them with `fedge certs new`), "
    "or --insecure (deploy.insecure = true) to serve plaintext on a trusted network"
)


class Entry(TypedDict):
    path: str
    sha256: str


Record = dict[str, Entry]


def fingerprint(path: str, field: str) -> str:
    """The SHA-256 (hex) of the file's content; a one-line error when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        raise ConfigError(f"deploy.{field}: cannot read {path}") from None


def record(cfg: DeployConfig) -> Record:
    """Absolute path and content fingerprint of every security setting that is set."""
    out: Record = {}
    for field in FIELDS:
        value = getattr(cfg, field)
        if value:
            out[field] = Entry(path=str(Path(value).resolve()), sha256=fingerprint(value, field))
    return out


def restore(cfg: DeployConfig, stored: Record, *, downgrade: bool = False) -> list[str]:
    """Fill ``cfg``'s empty security settings from ``stored``; return the warnings to show.

    Without ``downgrade`` a stored file that no longer exists raises :class:`ConfigError`
    naming it and the option that replaces it.
    """
    warnings: list[str] = []
    dropped: list[str] = []
    for field in FIELDS:
        entry = stored.get(field)
        if entry is None or getattr(cfg, field):
            continue
        if downgrade:
            dropped.append(field)
            continue
        path = entry["path"]
        if not Path(path).is_file():
            raise ConfigError(
                f"deploy.{field}: {path}, stored with this run, is gone; pass {OPTION[field]} FILE "
                "(or --downgrade-security to resume without it)"
            )
        if fingerprint(path, field) != entry["sha256"]:
            warnings.append(f"deploy.{field}: {path} has changed since the run stored it; using its new content")
        setattr(cfg, field, path)
    if dropped:
        lost = sorted({PROTECTION[f] for f in dropped})
        warnings.append(
            "DOWNGRADE: resuming without " + ", ".join(lost) + " that this run started with (--downgrade-security)"
        )
    return warnings


def merged(stored: Record, current: Record) -> Record:
    """The record kept after a resume: new files replace stored ones; a dropped one stays required."""
    return {**stored, **current}


def startup_warnings(cfg: DeployConfig) -> list[str]:
    """Warnings about a server that is easy to get wrong: no allow-list, plaintext by ``insecure``.

    A server with neither TLS nor ``insecure`` is a :class:`ConfigError`: plaintext is
    never what a missing option silently gives.
    """
    out = []
    if not cfg.allow_list:
        out.append(NO_ALLOW_LIST)
    check_plaintext(cfg)
    if not (cfg.tls_cert or cfg.tls_key):
        out.append(NO_TLS)
    return out


def check_plaintext(cfg: DeployConfig) -> None:
    """Raise :class:`ConfigError` for a server with neither TLS files nor ``insecure``."""
    if not (cfg.tls_cert or cfg.tls_key or cfg.insecure):
        raise ConfigError(NEED_TLS)
