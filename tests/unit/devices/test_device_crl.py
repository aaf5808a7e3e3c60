"""The device CRL on an edge: the strict reader (no ``cryptography``), the decision what a
fetched CRL changes, and the OpenSSL check that comes before any CRL is installed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from kedge._internal import fsutil
from kedge.cloud.devicecontroller import pki as device_pki
from kedge.edge import devicetwin, mqttkeys
from kedge.edge.devicetwin import crl
from kedge.errors import PeerError
from kedge.pki import ca as pki

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
MAX = 512 * 1024
DAY = dt.timedelta(days=1)


@pytest.fixture
def cloud(tmp_path: Path) -> Path:
    d = tmp_path / "cloud"
    fsutil.make_private_dir(d / "pki")
    return d


@pytest.fixture
def edge(cloud: Path, tmp_path: Path) -> Path:
    """An edge pki dir with an installed bundle (certificates, keys, CRL)."""
    pki_dir = fsutil.make_private_dir(tmp_path / "edge" / "pki")
    csrs = mqttkeys.stage_keys(pki_dir, "edge-1")
    devicetwin._install_bundle(pki_dir, device_pki.issue_broker_certs(
        cloud, "edge-1", csrs["serverCsr"].encode(), csrs["clientCsr"].encode(), now=NOW - dt.timedelta(minutes=5)))
    return pki_dir


def crl_pem(cloud: Path, *, now: dt.datetime = NOW, lifetime: dt.timedelta = DAY) -> bytes:
    return device_pki.device_crl_pem(cloud, now=now, lifetime=lifetime).encode()


def signed_crl(cloud: Path, serials: list[int], *, now: dt.datetime = NOW) -> bytes:
    """A CRL of the device CA revoking arbitrary serials (e.g. the edge's own certificates)."""
    key, cert = device_pki.ensure_device_ca(cloud, now=now)
    built = pki.build_crl(key, cert, [(s, now) for s in serials], now=now, next_update=DAY)  # type: ignore[arg-type]
    return built.public_bytes(serialization.Encoding.PEM)


def serial_of(path: Path) -> int:
    return pki.load_cert_file(path).serial_number


def info(this: dt.datetime, revoked: set[int] = frozenset(), number: int | None = None,
         lifetime: dt.timedelta = DAY) -> crl.CrlInfo:
    return crl.CrlInfo(this, this + lifetime, int(this.timestamp()) if number is None else number, frozenset(revoked))


# -- reader ------------------------------------------------------------------------------


def test_reader_gives_times_number_and_revoked_serials_of_a_cloud_crl(cloud):
    device_pki.issue_device_credentials(cloud, "default", "a", now=NOW)
    crt, _, _ = device_pki.issue_device_credentials(cloud, "default", "b", now=NOW)
    device_pki.revoke_device(cloud, "default", "b", now=NOW)
    got = crl.parse_crl_pem(crl_pem(cloud), max_bytes=MAX)
    assert got.this_update == NOW and got.next_update == NOW + DAY
    assert got.number == int(NOW.timestamp())
    assert got.revoked == {pki.load_cert_pem(crt).serial_number}


def test_reader_of_an_empty_crl_and_with_surrounding_whitespace(cloud):
    got = crl.parse_crl_pem(b"\n  " + crl_pem(cloud) + b"\n\n", max_bytes=MAX)
    assert got.revoked == frozenset()


@pytest.mark.parametrize("attack", ["certificate", "crl_then_certificate", "certificate_then_crl", "two_crls",
                                    "text_inside", "not_base64", "trailing_der"])
def test_a_crl_file_carrying_anything_but_one_crl_is_refused(cloud, attack):
    """OpenSSL's PEM loader takes certificates from a 'CRL' file too: one smuggled in would be a
    trust anchor in the check (and in any loader that reads certificates from crlfile)."""
    good = crl_pem(cloud)
    cert = device_pki.device_ca_pem(cloud, now=NOW)
    lines = good.splitlines(keepends=True)
    data = {
        "certificate": cert,
        "crl_then_certificate": good + cert,
        "certificate_then_crl": cert + good,
        "two_crls": good + good,
        "text_inside": b"".join(lines[:2] + [b"Proc-Type: 4,ENCRYPTED\n"] + lines[2:]),
        "not_base64": good.replace(lines[1][:8], b"!!!!!!!!"),
        "trailing_der": None,
    }[attack]
    if attack == "trailing_der":
        import base64

        der = crl.pem_to_der(good, max_bytes=MAX) + b"\x00\x00"
        data = crl.PEM_BEGIN + b"\n" + base64.encodebytes(der) + crl.PEM_END + b"\n"
    with pytest.raises(crl.BadCrl) as exc:
        crl.parse_crl_pem(data, max_bytes=MAX)
    assert isinstance(exc.value, PeerError)


def test_an_oversized_crl_is_refused_before_it_is_read(cloud):
    with pytest.raises(crl.BadCrl) as exc:
        crl.parse_crl_pem(crl_pem(cloud), max_bytes=100)
    assert exc.value.code == "crl_too_large"


def test_reader_parses_or_raises_bad_crl_on_every_truncation_and_byte_flip(cloud):
    der = crl.pem_to_der(crl_pem(cloud), max_bytes=MAX)
    for cut in range(len(der)):
        with pytest.raises(crl.BadCrl):
            crl.crl_info_der(der[:cut])
    for i in range(len(der)):
        flipped = der[:i] + bytes([der[i] ^ 0xFF]) + der[i + 1:]
        try:
            crl.crl_info_der(flipped)
        except crl.BadCrl:
            pass


# -- decisions ---------------------------------------------------------------------------


def test_expired_and_far_future_crls_are_refused_a_slightly_early_one_is_waited_for():
    with pytest.raises(crl.BadCrl) as exc:
        crl.check_current(info(NOW - 2 * DAY), now=NOW)
    assert exc.value.code == "crl_expired"
    with pytest.raises(crl.BadCrl) as exc:
        crl.check_current(info(NOW + dt.timedelta(minutes=5)), now=NOW)
    assert exc.value.code == "crl_not_yet_valid"
    assert crl.check_current(info(NOW + dt.timedelta(seconds=20)), now=NOW) == 20
    assert crl.check_current(info(NOW - dt.timedelta(seconds=20)), now=NOW) == 0


@pytest.mark.parametrize("installed, new, action", [
    (None, info(NOW), crl.Action.RESTART),  # nothing in force yet
    (info(NOW), info(NOW), crl.Action.KEEP),  # the same CRL again
    (info(NOW, {7}), info(NOW - dt.timedelta(hours=1)), crl.Action.KEEP),  # older: never roll back
    (info(NOW, {7}), info(NOW - dt.timedelta(hours=1), {7, 8}), crl.Action.KEEP),  # older, even if it lists more
    (info(NOW - dt.timedelta(hours=1), {7}), info(NOW, {7, 8}), crl.Action.RESTART),  # newly revoked: cut sessions
    (info(NOW - dt.timedelta(hours=1), {7, 8}), info(NOW, {8}), crl.Action.RELOAD),  # an expired record dropped
    (info(NOW - dt.timedelta(hours=1), {7}), info(NOW, {7}), crl.Action.KEEP),  # nothing new, far from stale
    (info(NOW - dt.timedelta(hours=17), {7}), info(NOW, {7}), crl.Action.RELOAD),  # past 2/3 of its life: refresh
])
def test_what_a_fetched_crl_changes(installed, new, action):
    assert crl.decide(installed, new, now=NOW) is action


def test_crl_number_orders_crls_issued_within_one_second():
    old = info(NOW, {7}, number=100)
    assert crl.decide(old, info(NOW, {7, 8}, number=101), now=NOW) is crl.Action.RESTART
    assert crl.decide(old, info(NOW, {7, 8}, number=99), now=NOW) is crl.Action.KEEP


def test_polls_come_at_the_configured_interval_and_several_times_before_the_crl_goes_stale():
    assert crl.poll_delay(info(NOW), interval_s=300, now=NOW) == 300
    assert crl.poll_delay(info(NOW, lifetime=dt.timedelta(seconds=400)), interval_s=300, now=NOW) == 100
    assert crl.poll_delay(info(NOW - 2 * DAY), interval_s=300, now=NOW) == 1.0  # stale: at once, not in a loop
    assert crl.poll_delay(None, interval_s=300, now=NOW) == 1.0


# -- install -----------------------------------------------------------------------------


def test_the_bundle_crl_is_installed_private_with_the_certificates(edge):
    crl_file = edge / devicetwin.CRL_FILE
    assert devicetwin.CRL_FILE in devicetwin.CERT_FILES  # an edge without one fetches a new bundle
    assert crl_file.stat().st_mode & 0o777 == 0o600
    assert crl.parse_crl_pem(crl_file.read_bytes(), max_bytes=MAX).revoked == frozenset()
    assert not list(edge.glob("*.next"))


def test_an_edge_installed_before_crls_came_with_the_bundle_fetches_a_new_one(edge):
    (edge / devicetwin.CRL_FILE).unlink()
    assert not devicetwin._certs_usable(edge)


@pytest.mark.parametrize("bad, code", [
    ("missing", "crl_missing"),
    ("other_ca", "crl_not_from_device_ca"),
    ("expired", "crl_expired"),
    ("certificate", "bad_crl"),
])
def test_a_bundle_with_an_unusable_crl_is_refused_and_changes_nothing(cloud, edge, tmp_path, bad, code):
    before = {n: (edge / n).read_bytes() for n in devicetwin.CERT_FILES}
    csrs = mqttkeys.stage_keys(edge, "edge-1")
    bundle = device_pki.issue_broker_certs(cloud, "edge-1", csrs["serverCsr"].encode(), csrs["clientCsr"].encode(),
                                           now=NOW - dt.timedelta(minutes=5))
    other = tmp_path / "other-cloud"
    fsutil.make_private_dir(other / "pki")
    bundle["crl"] = {"missing": None,
                     "other_ca": crl_pem(other).decode(),
                     "expired": crl_pem(cloud, now=NOW - 3 * DAY).decode(),
                     "certificate": bundle["ca"]}[bad]
    with pytest.raises(PeerError) as exc:
        devicetwin._install_bundle(edge, bundle)
    assert exc.value.code == code
    assert {n: (edge / n).read_bytes() for n in devicetwin.CERT_FILES} == before
    assert not list(edge.glob("*.next"))


def test_a_newer_crl_of_the_device_ca_is_installed_in_place(cloud, edge):
    device_pki.issue_device_credentials(cloud, "default", "d", now=NOW)
    device_pki.revoke_device(cloud, "default", "d", now=NOW)
    new = crl_pem(cloud, now=NOW + dt.timedelta(seconds=1) - dt.timedelta(minutes=1))
    devicetwin._install_crl(edge, new)
    assert (edge / devicetwin.CRL_FILE).read_bytes() == new
    assert (edge / devicetwin.CRL_FILE).stat().st_mode & 0o777 == 0o600
    assert len(devicetwin._installed_crl(edge, _Limits()).revoked) == 1
    assert not list(edge.glob("*.next"))


@pytest.mark.parametrize("bad, code", [
    ("other_ca", "crl_not_from_device_ca"),
    ("forged", "crl_bad_signature"),
    ("revokes_broker", "crl_revokes_this_edge"),
    ("revokes_edgecore", "crl_revokes_this_edge"),
])
def test_a_crl_openssl_does_not_accept_for_this_edge_is_not_installed(cloud, edge, tmp_path, bad, code):
    before = (edge / devicetwin.CRL_FILE).read_bytes()
    other = tmp_path / "other-cloud"
    fsutil.make_private_dir(other / "pki")
    if bad == "other_ca":
        data = crl_pem(other)
    elif bad == "forged":  # the device CA's name and key id, another CA's signature
        import shutil

        shutil.copy(cloud / "pki" / "device-ca.crt", other / "pki" / "device-ca.crt")
        fsutil.write_private(other / "pki" / "device-ca.key", pki.key_to_pem(pki.generate_key()))
        key, cert = pki.load_key_file(other / "pki" / "device-ca.key"), pki.load_cert_file(other / "pki" / "device-ca.crt")
        data = _sign_unchecked(key, cert)
    else:
        own = edge / ("mqtt-broker.crt" if bad == "revokes_broker" else "mqtt-client.crt")
        data = signed_crl(cloud, [serial_of(own)])
    with pytest.raises(PeerError) as exc:
        devicetwin._install_crl(edge, data)
    assert exc.value.code == code
    assert (edge / devicetwin.CRL_FILE).read_bytes() == before
    assert not list(edge.glob("*.next"))


def _sign_unchecked(key, cert) -> bytes:
    """A CRL naming ``cert``'s subject, signed with ``key`` (which is not ``cert``'s key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    built = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject).last_update(NOW)
             .next_update(NOW + DAY).add_extension(x509.CRLNumber(int(NOW.timestamp())), critical=False)
             .sign(key, hashes.SHA256()))
    return built.public_bytes(serialization.Encoding.PEM)


class _Limits:
    max_device_crl_bytes = MAX
