"""Security settings stored with a served run and restored on resume (fedge.deploy.security)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.core.errors import ConfigError
from fedge.deploy import security
from fedge.deploy.config import DeployConfig
from fedge.deploy.store import Store


def _files(tmp_path: Path) -> DeployConfig:
    names = {"tls_cert": "server.pem", "tls_key": "server.key", "allow_list": "allow.txt", "revoked": "revoked.txt"}
    cfg = DeployConfig()
    for field, name in names.items():
        (tmp_path / name).write_text(f"content of {name}\n")
        setattr(cfg, field, str(tmp_path / name))
    return cfg


def test_the_record_survives_the_store_and_fills_an_empty_resume(tmp_path: Path) -> None:
    started = _files(tmp_path)
    store = Store(tmp_path / "state.db")
    store.set_security(security.record(started))
    store.close()
    kept = Store(tmp_path / "state.db").security()
    assert kept is not None and set(kept) == {"tls_cert", "tls_key", "allow_list", "revoked"}
    resumed = DeployConfig()
    assert security.restore(resumed, kept) == []
    assert (resumed.tls_cert, resumed.allow_list, resumed.revoked) == (
        started.tls_cert,
        started.allow_list,
        started.revoked,
    )
    assert resumed.client_ca == ""


def test_a_vanished_stored_file_is_a_one_line_error_naming_it_and_its_option(tmp_path: Path) -> None:
    kept = security.record(_files(tmp_path))
    (tmp_path / "allow.txt").unlink()
    with pytest.raises(ConfigError) as err:
        security.restore(DeployConfig(), kept)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "allow.txt") in msg and "--allow" in msg


def test_an_explicit_new_file_wins_and_a_changed_stored_one_is_reported(tmp_path: Path) -> None:
    kept = security.record(_files(tmp_path))
    (tmp_path / "server.pem").write_text("renewed certificate\n")
    new_allow = tmp_path / "allow-2.txt"
    new_allow.write_text("another list\n")
    cfg = DeployConfig(allow_list=str(new_allow))
    notes = security.restore(cfg, kept)
    assert cfg.allow_list == str(new_allow)
    assert len(notes) == 1 and "tls_cert" in notes[0] and "changed" in notes[0]
    after = security.merged(kept, security.record(cfg))
    assert after["allow_list"]["path"] == str(new_allow.resolve()) and after["revoked"] == kept["revoked"]


def test_downgrade_drops_stored_protections_only_when_asked_and_names_them(tmp_path: Path) -> None:
    kept = security.record(_files(tmp_path))
    cfg = DeployConfig(allow_list=kept["allow_list"]["path"])
    notes = security.restore(cfg, kept, downgrade=True)
    assert (cfg.tls_cert, cfg.revoked) == ("", "")
    assert notes == [
        "DOWNGRADE: resuming without TLS, the revocation list that this run started with (--downgrade-security)"
    ]
    assert security.merged(kept, security.record(cfg)) == kept


def test_startup_warnings_say_what_an_open_server_does() -> None:
    assert security.startup_warnings(DeployConfig(insecure=True)) == [security.NO_ALLOW_LIST, security.NO_TLS]
    with pytest.raises(ConfigError, match=r"no TLS: pass --tls-cert/--tls-key .* or --insecure"):
        security.startup_warnings(DeployConfig())
    assert "every node will be refused" in security.NO_ALLOW_LIST
    safe = DeployConfig(allow_list="a", tls_cert="c", tls_key="k")
    assert security.startup_warnings(safe) == []
