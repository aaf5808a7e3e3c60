"""``kedge init``: create a cloud data directory (CA, serving and client certs, config)."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization

from kedge._internal.net import url_host as _url_host
from kedge._internal import fsutil
from kedge.cloud.config import ENCRYPTION_CONFIG, CloudConfig, CloudDir
from kedge.errors import StateError
from kedge.pki import ca as pki

ADMIN_USER = "kedge-admin"
ADMIN_GROUPS = ("system:masters",)
CLOUDCORE_USER = "system:kedge:cloudcore"
CLOUDCORE_GROUPS = ("system:kedge-cloudcore",)



def write_kubeconfig(d: CloudDir, server: str) -> None:
    """(Re)write ``admin.kubeconfig`` pointing at ``server`` (0600: it embeds a key)."""
    ca = d.ca_crt.read_bytes()
    crt = d.admin_crt.read_bytes()
    key = d.admin_key.read_bytes()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kedge", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": ADMIN_USER, "user": {"client-certificate-data": b64(crt), "client-key-data": b64(key)}}],
        "contexts": [{"name": "kedge", "context": {"cluster": "kedge", "user": ADMIN_USER}}],
        "current-context": "kedge",
    }
    fsutil.write_private(d.kubeconfig, yaml.safe_dump(doc, sort_keys=False).encode())


def init_cloud(
    root: str | Path,
    *,
    advertise_addresses: list[str] | None = None,
    api_port: int = 6443,
    hub_port: int = 10000,
    cert_port: int = 10002,
    node_cert_validity_s: int | None = None,
    mqtt_cert_validity_s: int | None = None,
    pod_security: str = "baseline",
    now: dt.datetime | None = None,
) -> CloudDir:
    d = CloudDir(root)
    if d.ca_key.exists() or d.ca_crt.exists() or d.config.exists():
        raise StateError(f"{d.root} already holds a kedge cluster; refusing to overwrite its CA",
                         code="exists")
    now = now or dt.datetime.now(dt.timezone.utc)
    adv = list(advertise_addresses or ["127.0.0.1"])
    fsutil.make_private_dir(d.root)
    fsutil.make_private_dir(d.pki)

    ca_key, ca_cert = pki.create_ca("kedge-ca", now=now)
    fsutil.create_exclusive(d.ca_key, pki.key_to_pem(ca_key), mode=fsutil.PRIVATE_FILE)
    fsutil.create_exclusive(d.ca_crt, pki.cert_to_pem(ca_cert), mode=fsutil.PUBLIC_FILE)

    sans = list(dict.fromkeys(adv + ["127.0.0.1", "localhost"]))
    hub_key, hub_cert = pki.issue_server_cert(ca_key, ca_cert, common_name="kedge-cloudhub", sans=sans, now=now)
    assert hub_key is not None  # nosec B101 - issue_server_cert generates a key when given none
    fsutil.write_private(d.hub_key, pki.key_to_pem(hub_key))
    fsutil.atomic_write(d.hub_crt, pki.cert_to_pem(hub_cert))

    year = dt.timedelta(days=365)
    for user, groups, crt_path, key_path in (
        (ADMIN_USER, ADMIN_GROUPS, d.admin_crt, d.admin_key),
        (CLOUDCORE_USER, CLOUDCORE_GROUPS, d.cloudcore_crt, d.cloudcore_key),
    ):
        key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name=user, organizations=groups,
                                          now=now, validity=year)
        assert key is not None  # nosec B101 - issue_client_cert generates a key when given none
        fsutil.write_private(key_path, pki.key_to_pem(key))
        fsutil.atomic_write(crt_path, pki.cert_to_pem(cert))

    cfg = CloudConfig(
        advertise_addresses=tuple(adv), api_port=api_port, hub_port=hub_port, cert_port=cert_port,
        pod_security=pod_security,
        **({"node_cert_validity_s": node_cert_validity_s} if node_cert_validity_s else {}),
        **({"mqtt_cert_validity_s": mqtt_cert_validity_s} if mqtt_cert_validity_s else {}),
    )
    d.save_config(cfg)

    from kedge.cloud.state import CloudState

    CloudState(d.state_db).close()
    from kedge.store.sealing import Sealer

    Sealer.load_or_create(d.pki / ENCRYPTION_CONFIG)  # the key that seals Secrets in api.db (0600)
    crl = pki.build_crl(ca_key, ca_cert, [], now=now)
    fsutil.atomic_write(d.crl, crl.public_bytes(serialization.Encoding.PEM))
    write_kubeconfig(d, f"https://{_url_host(adv[0])}:{api_port}")
    return d
