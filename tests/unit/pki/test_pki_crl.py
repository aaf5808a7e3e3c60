"""CRL decisions (kedge.pki.crl) and the API server's fail-closed view of the CRL file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from kedge._internal import fsutil
from kedge.apiserver.http import RevocationList
from kedge.pki import ca, crl

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def cas():
    return ca.create_ca("test CA", now=NOW - 10 * DAY), ca.create_ca("other CA", now=NOW - 10 * DAY)


def _pem(key, cert, revoked=(), *, now=NOW, lifetime=7 * DAY) -> bytes:
    return ca.build_crl(key, cert, revoked, now=now, next_update=lifetime).public_bytes(serialization.Encoding.PEM)


def test_current_crl_signed_by_the_ca_is_accepted_with_its_serials(cas):
    (key, cert), _ = cas
    view = crl.check_crl(_pem(key, cert, [(5, NOW), (7, NOW)]), [cert], now=NOW + DAY)
    assert view.serials == {5, 7} and view.next_update == NOW + 7 * DAY and not view.expired(NOW + DAY)


@pytest.mark.parametrize("when, code", [(NOW + 7 * DAY, "crl_expired"), (NOW + 30 * DAY, "crl_expired"),
                                        (NOW - DAY, "crl_not_yet_valid")])
def test_crl_outside_its_validity_is_refused(cas, when, code):
    (key, cert), _ = cas
    with pytest.raises(crl.CrlError) as info:
        crl.check_crl(_pem(key, cert), [cert], now=when)
    assert info.value.code == code


def test_expired_crl_is_readable_by_its_issuer_only_on_request(cas):
    (key, cert), _ = cas
    view = crl.check_crl(_pem(key, cert, [(9, NOW)]), [cert], now=NOW + 30 * DAY, allow_expired=True)
    assert view.serials == {9} and view.expired(NOW + 30 * DAY)


def test_crl_of_another_ca_or_forged_is_refused(cas):
    (_, cert), (okey, ocert) = cas
    with pytest.raises(crl.CrlError) as info:
        crl.check_crl(_pem(okey, ocert), [cert], now=NOW)
    assert info.value.code == "crl_wrong_issuer"
    # Same issuer name, another key: the signature does not verify.
    forger_key, forger = ca.create_ca("test CA", now=NOW - DAY)
    with pytest.raises(crl.CrlError) as info:
        crl.check_crl(_pem(forger_key, forger), [cert], now=NOW)
    assert info.value.code == "crl_bad_signature"
    # During CA rotation either CA of the bundle may sign it.
    assert crl.check_crl(_pem(okey, ocert), [cert, ocert], now=NOW).serials == frozenset()


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"])
def test_malformed_crl_is_refused(cas, data):
    (_, cert), _ = cas
    with pytest.raises(crl.CrlError) as info:
        crl.check_crl(data, [cert], now=NOW)
    assert info.value.code == "crl_malformed"


def test_reissue_is_due_at_half_of_the_lifetime(cas):
    (key, cert), _ = cas
    view = crl.check_crl(_pem(key, cert), [cert], now=NOW)
    assert not crl.reissue_due(view, NOW + 3 * DAY)
    assert crl.reissue_due(view, NOW + dt.timedelta(days=3.5))


def _files(tmp_path: Path, key, cert) -> tuple[Path, Path, Path]:
    ca_crt, ca_key, path = tmp_path / "ca.crt", tmp_path / "ca.key", tmp_path / "crl.pem"
    fsutil.atomic_write(ca_crt, ca.cert_to_pem(cert))
    fsutil.write_private(ca_key, ca.key_to_pem(key))
    return ca_crt, ca_key, path


class _Source:
    def __init__(self) -> None:
        self.revoked: list[tuple[int, dt.datetime]] = [(11, NOW)]
        self.gen = 0
        self.on_read = None

    def entries(self, now):
        if self.on_read is not None:
            self.on_read()
        return list(self.revoked)

    def generation(self) -> int:
        return self.gen


def test_keeper_reissues_before_next_update_and_never_while_fresh(cas, tmp_path):
    (key, cert), _ = cas
    ca_crt, ca_key, path = _files(tmp_path, key, cert)
    fsutil.atomic_write(path, _pem(key, cert, [(11, NOW)]))
    src, clock = _Source(), [NOW.timestamp() + 3600]
    keeper = crl.CrlKeeper(path, ca_key_path=ca_key, ca_cert_path=ca_crt, revoked=src.entries,
                           generation=src.generation, clock=lambda: clock[0])
    before = path.read_bytes()
    assert keeper.refresh().serials == {11} and path.read_bytes() == before and keeper.reissued == 0
    clock[0] = (NOW + 4 * DAY).timestamp()  # past half-life, days before any consumer would refuse it
    view = keeper.refresh()
    assert keeper.reissued == 1 and view.serials == {11} and view.next_update == NOW + 11 * DAY
    assert crl.load_crl_file(path, [cert], now=NOW + 10 * DAY).serials == {11}


def test_keeper_rewrites_when_a_revocation_lands_while_it_writes(cas, tmp_path):
    (key, cert), _ = cas
    ca_crt, ca_key, path = _files(tmp_path, key, cert)
    fsutil.atomic_write(path, _pem(key, cert, [(11, NOW)]))
    src = _Source()

    def revoke_meanwhile():  # `kedge node revoke` commits between our read and our write
        src.on_read = None
        src.revoked.append((12, NOW + 4 * DAY))
        src.gen += 1

    src.on_read = revoke_meanwhile
    keeper = crl.CrlKeeper(path, ca_key_path=ca_key, ca_cert_path=ca_crt, revoked=src.entries,
                           generation=src.generation, clock=lambda: (NOW + 4 * DAY).timestamp())
    assert keeper.refresh().serials == {11, 12}


def test_keeper_replaces_an_expired_crl_only_when_asked_and_never_creates_a_missing_one(cas, tmp_path):
    (key, cert), _ = cas
    ca_crt, ca_key, path = _files(tmp_path, key, cert)
    src = _Source()
    keeper = crl.CrlKeeper(path, ca_key_path=ca_key, ca_cert_path=ca_crt, revoked=src.entries,
                           generation=src.generation, clock=lambda: (NOW + 30 * DAY).timestamp())
    with pytest.raises(crl.CrlError) as info:
        keeper.refresh(allow_expired=True)
    assert info.value.code == "crl_missing" and not path.exists()
    fsutil.atomic_write(path, _pem(key, cert))
    with pytest.raises(crl.CrlError) as info:
        keeper.refresh()
    assert info.value.code == "crl_expired"
    assert keeper.refresh(allow_expired=True).next_update == NOW + 37 * DAY


def test_revocation_list_fails_closed_on_missing_bad_and_expired_crls(cas, tmp_path):
    (key, cert), (okey, ocert) = cas
    ca_crt, _, path = _files(tmp_path, key, cert)
    clock = [NOW.timestamp()]
    rev = RevocationList(path, ca_crt, clock=lambda: clock[0])
    assert rev.refuses(1) and rev.error == "crl_missing"  # missing is not "nothing revoked"
    fsutil.atomic_write(path, _pem(key, cert, [(5, NOW)]))
    assert rev.error is None and rev.refuses(5) and not rev.refuses(6)
    gen = rev.generation
    clock[0] = (NOW + 7 * DAY).timestamp()  # the same file, now past its nextUpdate
    assert rev.refuses(6) and rev.error == "crl_expired" and rev.generation > gen
    clock[0] = NOW.timestamp()
    fsutil.atomic_write(path, _pem(okey, ocert))
    assert rev.refuses(6) and rev.error == "crl_wrong_issuer"
    fsutil.atomic_write(path, b"not a crl")
    assert rev.refuses(6) and rev.error == "crl_malformed"
    fsutil.atomic_write(path, _pem(key, cert, [(6, NOW)]))
    assert rev.error is None and rev.refuses(6) and not rev.refuses(5)
    assert rev.refuses(None)  # a certificate whose serial could not be read
