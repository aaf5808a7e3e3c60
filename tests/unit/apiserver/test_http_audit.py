"""The API audit log is private, append-only JSON lines, and rotates at a size bound."""

from __future__ import annotations

import json
import os
import stat

from kedge.apiserver import http as apihttp


def test_audit_log_rotates_keeps_generations_and_stays_private(tmp_path, monkeypatch):
    monkeypatch.setattr(apihttp, "AUDIT_MAX_BYTES", 1000)
    monkeypatch.setattr(apihttp, "AUDIT_KEEP_FILES", 3)
    path = tmp_path / "apiserver-audit.log"
    server = apihttp.ApiServer(api=None, ssl_context=None, audit_path=path)  # type: ignore[arg-type]
    for i in range(100):  # about 15 records a file: several rotations
        server.audit({"i": i, "pad": "x" * 50})
    files = [path] + [tmp_path / f"apiserver-audit.log.{k}" for k in (1, 2, 3)]
    assert all(p.exists() for p in files) and not (tmp_path / "apiserver-audit.log.4").exists()
    for p in files:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        assert p.stat().st_size <= 1000
    # Newest first, no gaps: the generations together are the last records, in order.
    kept = [json.loads(x)["i"] for p in reversed(files) for x in p.read_text().splitlines()]
    assert kept == list(range(kept[0], 100))


def test_user_from_certificate_subject():
    cert = {"subject": ((("organizationName", "system:nodes"),), (("commonName", "system:node:a"),)),
            "serialNumber": "0A"}
    user, serial = apihttp.user_from_cert(cert)
    assert user.name == "system:node:a" and user.groups == ("system:nodes", "system:authenticated") and serial == 10
    assert apihttp.user_from_cert({"subject": ((("organizationName", "x"),),), "serialNumber": "1"}) == (None, None)
    assert apihttp.user_from_cert(None) == (None, None)
