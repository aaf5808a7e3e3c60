"""The API audit log is private, append-only JSON lines, and rotates at a size bound."""

from __future__ import annotations

import json
import os
import stat

from kedge.apiserver import http as apihttp


def test_audit_log_rotates_and_stays_private(tmp_path, monkeypatch):
    monkeypatch.setattr(apihttp, "AUDIT_MAX_BYTES", 1000)
    path = tmp_path / "apiserver-audit.log"
    server = apihttp.ApiServer(api=None, ssl_context=None, audit_path=path)  # type: ignore[arg-type]
    for i in range(40):
        server.audit({"i": i, "pad": "x" * 50})
    rotated = tmp_path / "apiserver-audit.log.1"
    assert rotated.exists() and path.exists()
    for p in (path, rotated):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        assert p.stat().st_size <= 1000
    last = [json.loads(x) for x in path.read_text().splitlines()]
    assert last[-1]["i"] == 39


def test_user_from_certificate_subject():
    cert = {"subject": ((("organizationName", "system:nodes"),), (("commonName", "system:node:a"),)),
            "serialNumber": "0A"}
    user, serial = apihttp.user_from_cert(cert)
    assert user.name == "system:node:a" and user.groups == ("system:nodes", "system:authenticated") and serial == 10
    assert apihttp.user_from_cert({"subject": ((("organizationName", "x"),),), "serialNumber": "1"}) == (None, None)
    assert apihttp.user_from_cert(None) == (None, None)
