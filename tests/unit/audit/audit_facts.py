"""Hand-built facts for the pure-core tests: a healthy deployment to plant faults into."""

from __future__ import annotations

import dataclasses
import datetime as dt

from kedge.audit.facts import (
    CertInfo,
    CloudFacts,
    CrlInfo,
    EdgeFacts,
    Facts,
    FileStat,
    MqttFacts,
    MqttListener,
    ProbeFacts,
    RbacFacts,
    TokenFacts,
    TokenRow,
)

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
UID = 1000
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
GOOD_HASH = "sha256:" + "ab" * 32


def f(path: str, mode: int = 0o600, is_dir: bool = False) -> FileStat:
    return FileStat(path=path, exists=True, mode=mode, uid=UID, is_dir=is_dir)


def cert(name: str, **kw) -> CertInfo:
    base = dict(name=name, path=f"/c/pki/{name}", subject_cn="x", subject_o=(),
                not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=364),
                key_type="ec", key_bits=256, curve="secp256r1", signed_by_ca=True, eku=(CLIENT_AUTH,))
    base.update(kw)
    return CertInfo(**base)


def cloud(**kw) -> CloudFacts:
    base = dict(
        root="/c", service_uid=UID,
        dirs=(f("/c", 0o700, True), f("/c/pki", 0o700, True)),
        key_files=tuple(f(f"/c/pki/{n}.key") for n in ("ca", "hub", "admin", "cloudcore")),
        kubeconfig=f("/c/admin.kubeconfig"),
        state_db=f("/c/state.db"),
        audit_log=f("/c/audit.log"),
        config={"advertise_addresses": ["127.0.0.1"], "allow_tls12": False, "node_authorization": "enforce",
                "node_cert_validity_s": 2592000, "token_default_ttl_s": 900, "audit_log": "audit.log",
                "limits": {}},
        config_error=None, config_path="/c/config.json",
        ca=cert("ca.crt", subject_cn="kedge-ca", is_ca=True, key_cert_sign=True, eku=(),
                not_after=NOW + dt.timedelta(days=3000)),
        certs=(
            cert("hub.crt", subject_cn="kedge-cloudhub", sans=("ip:127.0.0.1", "dns:localhost"), eku=(SERVER_AUTH,)),
            cert("admin.crt", subject_cn="kedge-admin", subject_o=("system:masters",)),
            cert("cloudcore.crt", subject_cn="system:kedge:cloudcore", subject_o=("system:kedge-cloudcore",)),
        ),
        crl=CrlInfo(path="/c/pki/crl.pem", exists=True, signed_by_ca=True, next_update=NOW + dt.timedelta(days=7)),
        tokens=TokenFacts(db_path="/c/state.db", rows=(TokenRow("abc123", GOOD_HASH, 0.0, 900.0, False),)),
        plaintext_hits=(),
        rbac=None,
    )
    base.update(kw)
    return CloudFacts(**base)


def edge(**kw) -> EdgeFacts:
    base = dict(
        root="/e", service_uid=UID,
        dirs=(f("/e", 0o700, True), f("/e/pki", 0o700, True)),
        node_key=f("/e/pki/node.key"),
        edge_db=f("/e/edge.db"),
        edge_key=f("/e/edge.key"),
        config={"node_name": "edge-1", "hub": "wss://127.0.0.1:10000", "certs": "https://127.0.0.1:10002"},
        config_error=None, config_path="/e/config.json",
        node_cert=cert("node.crt", path="/e/pki/node.crt", subject_cn="system:node:edge-1",
                       subject_o=("system:nodes",), not_after=NOW + dt.timedelta(days=29)),
        ca=None,
        mqtt=MqttFacts(conf_path="/e/mosquitto/mosquitto.conf", listeners=(
            MqttListener(port=8883, address="127.0.0.1", tls=True, require_certificate=True),),
            global_allow_anonymous=False, global_acl_file="/e/mosquitto/acl"),
    )
    base.update(kw)
    return EdgeFacts(**base)


def hub_probe(**kw) -> ProbeFacts:
    base = dict(url="wss://127.0.0.1:10000", role="hub", host="127.0.0.1",
                versions=(("TLSv1", "refused"), ("TLSv1.1", "refused"), ("TLSv1.2", "refused"),
                          ("TLSv1.3", "accepted")),
                no_client_cert="refused",
                peer_cert=cert("served", sans=("ip:127.0.0.1",), eku=(SERVER_AUTH,)))
    base.update(kw)
    return ProbeFacts(**base)


def certs_probe(**kw) -> ProbeFacts:
    base = dataclasses.asdict(hub_probe())
    base.update(url="https://127.0.0.1:10002", role="certs", no_client_cert="n/a", oversized="413",
                unauthenticated_csr=401,
                peer_cert=hub_probe().peer_cert)
    base["versions"] = tuple(tuple(v) for v in base["versions"])
    base.update(kw)
    return ProbeFacts(**base)


def api_probe(**kw) -> ProbeFacts:
    p = dataclasses.replace(certs_probe(), url="https://127.0.0.1:6443", role="api", oversized="n/a",
                            anonymous_status=401)
    return dataclasses.replace(p, **kw)


def facts(**kw) -> Facts:
    base = dict(now=NOW, version="0.1.0", oldest_supported="0.1.0", cloud=cloud(), edge=edge(),
                probes=(hub_probe(), certs_probe(), api_probe()))
    base.update(kw)
    return Facts(**base)


def rbac(*docs) -> RbacFacts:
    from kedge.audit.gather import _collect

    bindings, roles = [], []
    for d in docs:
        _collect(d, "/c/manifests/rbac.yaml", bindings, roles)
    return RbacFacts(source="/c/manifests", bindings=tuple(bindings), roles=tuple(roles))
