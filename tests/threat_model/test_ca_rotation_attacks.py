"""Threat K-CA-ROTATION: a CA rotation must neither leave the retired CA usable nor let anyone but
a trusted CA's key holder plant a new root of trust on edges."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from kedge import tls
from kedge.edge.hub import EdgeHub
from kedge.errors import PeerError
from kedge.pki import ca as pki
from kedge.pki.rotation import cross_certify
from kedge.protocol import message as m
from support.cluster import REPO, kedge, running_cloud
from support.edge import edge_hub, hubinfo

NOW = dt.datetime.now(dt.timezone.utc)


def _copy_identity(src: Path, dst: Path, crt: str, key: str) -> tuple[Path, Path]:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / crt, dst / "old.crt")
    shutil.copy(src / key, dst / "old.key")
    return dst / "old.crt", dst / "old.key"


def _refused(fn) -> str:
    """Run ``fn``; the way it was refused (it must be)."""
    try:
        result = fn()
    except (ssl.SSLError, ConnectionError, InvalidHandshake, OSError) as exc:
        return type(exc).__name__
    raise AssertionError(f"accepted: {result!r}")


@pytest.mark.threat("K-CA-ROTATION")
def test_old_ca_certificate_is_refused_after_finish_by_hub_cert_endpoint_and_api_server(tmp_path: Path):
    with running_cloud(tmp_path) as cloud:
        edge = tmp_path / "victim"
        assert cloud.join("victim", edge).returncode == 0
        keep = tmp_path / "stolen"
        node_crt, node_key = _copy_identity(edge / "pki", keep / "node", "node.crt", "node.key")
        admin_crt, admin_key = _copy_identity(cloud.dir / "pki", keep / "admin", "admin.crt", "admin.key")

        async def live_tunnel_through_rotation() -> tuple[int | None, str]:
            async with edge_hub(edge) as hub:
                await hubinfo(hub)
                conn = hub.conn
                assert kedge("ca", "rotate", "--data-dir", str(cloud.dir)).returncode == 0
                # The node renews (the renewal child, as EdgeHub runs it) but keeps its tunnel:
                # the tunnel still stands on the old certificate when finish retires its CA.
                out = subprocess.run([sys.executable, "-m", "kedge.edge.renewal", str(edge)], cwd=REPO,
                                     capture_output=True, text=True, timeout=60)
                assert json.loads(out.stdout.strip().splitlines()[-1]) == {"ok": True}, out
                r = await asyncio.to_thread(kedge, "ca", "finish", "--data-dir", str(cloud.dir))
                assert r.returncode == 0, r.stderr
                async with asyncio.timeout(5):
                    await conn.wait_closed()
                return conn.close_code, conn.close_reason

        assert asyncio.run(live_tunnel_through_rotation()) == (4011, "ca_retired")
        new_ca = (cloud.dir / "pki" / "ca.crt").read_text()
        assert pki.load_cert_pem(new_ca.encode()).subject.rfc4514_string() == "CN=kedge-ca-2"

        def ctx(crt: Path, key: Path) -> ssl.SSLContext:
            return tls.client_context(cadata=new_ca, cert=crt, key=key)

        # Hub: the handshake (or, for a resumed or racing one, the upgrade) is refused.
        host, port = cloud.hub_hostport

        def hub_with_old_cert():
            async def go():
                async with connect(f"wss://{host}:{port}/tunnel", ssl=ctx(node_crt, node_key), proxy=None,
                                   open_timeout=5):
                    return "connected"
            try:
                return asyncio.run(go())
            except InvalidStatus as exc:
                raise ConnectionError(exc.response.status_code) from exc

        _refused(hub_with_old_cert)

        # Certificate endpoint: no renewal for the old certificate.
        certs = cloud.endpoints()["certs"]

        def renew_with_old_cert():
            key = pki.generate_key()
            req = urllib.request.Request(certs + "/edge.crt", data=pki.make_csr(key, "victim"), method="POST",
                                         headers={"Content-Type": "application/pkcs10"})
            with urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx(node_crt, node_key))) \
                    .open(req, timeout=5) as resp:
                return resp.status

        _refused(renew_with_old_cert)

        # API server: the old admin certificate (its key is still the admin key) is refused.
        api = cloud.endpoints()["api"]

        def api_with_old_admin():
            opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx(admin_crt, admin_key)))
            with opener.open(api + "/api/v1/nodes", timeout=5) as resp:
                return resp.status

        _refused(api_with_old_admin)
        # ...while the re-certified admin certificate of the new CA works (the refusal is about the CA).
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(
            context=ctx(cloud.dir / "pki" / "admin.crt", cloud.dir / "pki" / "admin.key")))
        with opener.open(api + "/api/v1/nodes", timeout=5) as resp:
            assert resp.status == 200
        # And the renewed edge reconnects with its new-CA identity.

        async def reconnect():
            async with edge_hub(edge) as hub:
                return (await hubinfo(hub))["node"]

        assert asyncio.run(reconnect()) == "victim"


def _bundle_msg(node: str, bundle: bytes, cross: bytes = b"") -> m.Message:
    return m.Message.new(source="cloudhub", destination="edgehub", group="hub", operation=m.UPDATE,
                         resource=f"{node}/cabundle/{node}",
                         content={"bundle": bundle.decode(), "cross": cross.decode()}, now_ms=0)


@pytest.mark.threat("K-CA-ROTATION")
def test_forged_ca_bundle_over_the_tunnel_is_refused_by_the_edge(tmp_path: Path):
    with running_cloud(tmp_path) as cloud:
        edge = tmp_path / "e"
        assert cloud.join("target", edge).returncode == 0
    pinned_pem = (edge / "pki" / "ca.crt").read_bytes()
    pinned = pki.load_cert_pem(pinned_pem)
    evil_key, evil = pki.create_ca("kedge-ca-2", now=NOW)
    evil_pem = pki.cert_to_pem(evil)
    # The attacker also holds a server certificate the pinned CA issued (a stolen hub key): it can
    # sign, but it is no CA the edge trusts, so it cannot vouch.
    hub_key = pki.load_key_file(tmp_path / "cloud" / "pki" / "hub.key")
    hub_crt = pki.load_cert_file(tmp_path / "cloud" / "pki" / "hub.crt")
    forged_by_hub = (
        x509.CertificateBuilder()
        .subject_name(evil.subject).issuer_name(hub_crt.subject).public_key(evil.public_key())
        .serial_number(7).not_valid_before(NOW - dt.timedelta(minutes=1)).not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(hub_key, hashes.SHA256())
    )
    self_vouched = cross_certify(evil_key, evil, evil, now=NOW)

    attempts = {
        "replace the pinned CA": (evil_pem, b"", "bundle_unvouched"),
        "replace the pinned CA with one it vouches for": (evil_pem, b"VOUCHED", "bundle_drops_trust"),
        "add a CA nobody vouches for": (pinned_pem + evil_pem, b"", "bundle_unvouched"),
        "add a CA that vouches for itself": (pinned_pem + evil_pem, pki.cert_to_pem(self_vouched), "bundle_unvouched"),
        "add a CA vouched for by the hub's key": (pinned_pem + evil_pem, pki.cert_to_pem(forged_by_hub),
                                                  "bundle_unvouched"),
        "smuggle a leaf as a CA": (pinned_pem + pki.cert_to_pem(hub_crt), b"", "bundle_not_ca"),
        "not PEM": (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"", "bundle_malformed"),
    }

    ca_key = pki.load_key_file(tmp_path / "cloud" / "pki" / "ca.key")
    vouched = cross_certify(ca_key, pinned, evil, now=NOW)

    async def main():
        hub = EdgeHub(edge)
        for what, (bundle, cross, code) in attempts.items():
            cross = pki.cert_to_pem(vouched) if cross == b"VOUCHED" else cross
            with pytest.raises(PeerError) as info:
                await hub._hub_message(_bundle_msg("target", bundle, cross))
            assert info.value.code == code, what
            assert (edge / "pki" / "ca.crt").read_bytes() == pinned_pem, what
            assert not (edge / "pki" / "ca-offer.json").exists()
        # A message for another node's bundle is not even looked at.
        with pytest.raises(PeerError) as info:
            await hub._hub_message(_bundle_msg("other", pinned_pem + evil_pem))
        assert info.value.code == "not_supported"
        # Positive control: the same shape, cross-certified by the pinned CA's key, is pinned.
        assert await hub._hub_message(_bundle_msg("target", pinned_pem + evil_pem, pki.cert_to_pem(vouched))) \
            == {"installed": True}
        assert (edge / "pki" / "ca.crt").read_bytes() == pinned_pem + evil_pem
        assert hub.ca_updates == 1

    asyncio.run(main())


@pytest.mark.threat("K-CA-ROTATION")
def test_join_refuses_a_bundle_whose_second_ca_the_pinned_ca_did_not_vouch_for(tmp_path: Path):
    from kedge.edge.cabundle import checked_bundle
    from kedge.pki.rotation import BundleError

    pinned_key, pinned = pki.create_ca("kedge-ca", now=NOW)
    _, evil = pki.create_ca("kedge-ca-2", now=NOW)
    other_key, other = pki.create_ca("kedge-ca-3", now=NOW)
    pem = pki.cert_to_pem
    with pytest.raises(BundleError) as info:  # cross-certified, but by a CA the edge does not pin
        checked_bundle(pem(pinned), pem(pinned) + pem(evil), pem(cross_certify(other_key, other, evil, now=NOW)),
                       now=NOW)
    assert info.value.code == "bundle_unvouched"
    assert checked_bundle(pem(pinned), pem(evil) + pem(pinned), pem(cross_certify(pinned_key, pinned, evil, now=NOW)),
                          now=NOW) == pem(evil) + pem(pinned)
