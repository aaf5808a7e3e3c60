"""The checks: one pure function per catalogue id, ``(Facts) -> Outcome``.

No I/O, no clock (``facts.now``), no imports of ssl/socket/sqlite3: everything a check
needs was gathered beforehand (:mod:`kedge.audit.gather`, :mod:`kedge.audit.probe`).
A check SKIPs when its subject does not exist ("component not present"), FAILs when
the subject is there and wrong, and returns ERROR only when facts say a probe could not
run -- never PASS on missing evidence.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import PurePath
from typing import Callable, Iterable

from kedge.audit.facts import CertInfo, CloudFacts, EdgeFacts, Facts, FileStat, MqttListener, ProbeFacts
from kedge.audit.model import Outcome, Status
from kedge.systemd import policy as unit_policy

CheckFn = Callable[[Facts], Outcome]
REGISTRY: dict[str, CheckFn] = {}

EXPIRY_WARN = dt.timedelta(days=30)
MAX_NODE_CERT_VALIDITY_S = 90 * 24 * 3600
HARD_NODE_CERT_VALIDITY_S = 365 * 24 * 3600
MAX_TOKEN_TTL_S = 3600
HARD_TOKEN_TTL_S = 24 * 3600
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
_EMPTY_LISTENER = MqttListener(port=None, address="127.0.0.1")
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"

# Ceilings above which a limits override defeats the bound's purpose.
LIMIT_CEILINGS: dict[str, float] = {
    "max_frame_bytes": 16 * 1024 * 1024,
    "max_json_depth": 128,
    "max_string_bytes": 4 * 1024 * 1024,
    "max_list_items": 100_000,
    "max_object_keys": 100_000,
    "max_resource_bytes": 4096,
    "max_http_body_bytes": 1024 * 1024,
    "max_http_header_bytes": 64 * 1024,
    "http_read_timeout_s": 120.0,
    "handshake_timeout_s": 120.0,
    "idle_timeout_s": 600.0,
    "outbound_queue_items": 100_000,
    "upstream_qps": 10_000.0,
    "upstream_burst": 100_000,
    "bootstrap_fail_burst": 1_000,
    "bootstrap_fail_per_s": 100.0,
}
KNOWN_LIMITS = frozenset(LIMIT_CEILINGS) | {"keepalive_interval_s", "max_nodes"}

_HASHED = re.compile(r"(sha256:[0-9a-f]{64}|\$argon2(id|i|d)\$.+|\$scrypt\$.+|pbkdf2_sha256\$.+)", re.ASCII)
NODE_IDENTITIES = (("Group", "system:nodes"), ("User", "system:kedge:cloudcore"),
                   ("Group", "system:kedge-cloudcore"))
UNAUTHENTICATED = (("Group", "system:unauthenticated"), ("User", "system:anonymous"))


def check(check_id: str) -> Callable[[CheckFn], CheckFn]:
    def deco(fn: CheckFn) -> CheckFn:
        if check_id in REGISTRY:
            raise RuntimeError(f"duplicate check {check_id}")
        REGISTRY[check_id] = fn
        return fn
    return deco


# --------------------------------------------------------------------------- helpers


def _o(status: Status, expected: str, actual: str, locations: Iterable[str] = ()) -> Outcome:
    return Outcome(status, expected, actual, tuple(dict.fromkeys(locations)))


def _skip(expected: str, reason: str) -> Outcome:
    return Outcome(Status.SKIP, expected, reason)


def _mode(m: int | None) -> str:
    return "missing" if m is None else f"{m:04o}"


def _private(st: FileStat) -> bool:
    return st.mode is not None and st.mode & 0o077 == 0


def _no_cloud(expected: str) -> Outcome:
    return _skip(expected, "no cloud data directory audited (--data-dir)")


def _no_edge(expected: str) -> Outcome:
    return _skip(expected, "no edge data directory audited (--edge-data-dir)")


def _cloud_config(c: CloudFacts, expected: str) -> dict | Outcome:
    if c.config_error:
        return _o(Status.FAIL, expected, f"config.json unreadable: {c.config_error}", [c.config_path])
    if c.config is None:
        return _o(Status.FAIL, expected, "config.json missing", [c.config_path])
    return c.config


def _validity(cert: CertInfo, now: dt.datetime) -> tuple[Status, str]:
    if cert.error:
        return Status.FAIL, f"{cert.name}: {cert.error}"
    assert cert.not_before is not None and cert.not_after is not None  # nosec B101 - parsed cert
    if now < cert.not_before:
        return Status.FAIL, f"{cert.name}: not valid before {cert.not_before.isoformat()}"
    if now >= cert.not_after:
        return Status.FAIL, f"{cert.name}: expired {cert.not_after.isoformat()}"
    left = cert.not_after - now
    # Warn 30 days ahead, or at a third of the lifetime for short-lived, auto-rotated
    # certificates (a 30-day node certificate would otherwise always warn).
    warn = min(EXPIRY_WARN, (cert.not_after - cert.not_before) / 3)
    if left < warn:
        return Status.WARN, f"{cert.name}: expires in {left.days} days ({cert.not_after.isoformat()})"
    return Status.PASS, f"{cert.name}: valid until {cert.not_after.date().isoformat()}"


def _worst(statuses: Iterable[Status]) -> Status:
    order = [Status.ERROR, Status.FAIL, Status.WARN, Status.INFO, Status.PASS, Status.SKIP]
    found = set(statuses)
    for s in order:
        if s in found:
            return s
    return Status.PASS


def _key_ok(cert: CertInfo) -> tuple[bool, str]:
    if cert.key_type == "ec":
        return cert.curve in ("secp256r1", "secp384r1", "secp521r1"), f"ECDSA {cert.curve}"
    if cert.key_type == "rsa":
        return (cert.key_bits or 0) >= 2048, f"RSA {cert.key_bits}"
    if cert.key_type in ("ed25519", "ed448"):
        return True, cert.key_type
    return False, str(cert.key_type)


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _san_key(addr: str) -> str:
    value = addr.strip("[]")
    try:
        return f"ip:{ipaddress.ip_address(value)}"
    except ValueError:
        return f"dns:{value.lower()}"


def _all_certs(c: CloudFacts) -> list[CertInfo]:
    return ([c.ca] if c.ca is not None else []) + list(c.certs)


# --------------------------------------------------------------------------- cloud


@check("KEDGE-CLOUD-001")
def key_file_modes(f: Facts) -> Outcome:
    exp = "every DIR/pki/*.key mode 0600 or stricter"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    present = [k for k in c.key_files if k.exists]
    if not present:
        return _o(Status.FAIL, exp, "no private key files found in DIR/pki", [c.root + "/pki"])
    bad = [k for k in present if not _private(k)]
    if bad:
        return _o(Status.FAIL, exp, ", ".join(f"{k.path} is {_mode(k.mode)}" for k in bad), [k.path for k in bad])
    return _o(Status.PASS, exp, f"{len(present)} key files, all 0600 or stricter")


@check("KEDGE-CLOUD-002")
def key_file_owner(f: Facts) -> Outcome:
    exp = "key files owned by the data directory's owner (the service user)"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    present = [k for k in c.key_files if k.exists]
    if not present or c.service_uid is None:
        return _skip(exp, "no key files present")
    bad = [k for k in present if k.uid != c.service_uid]
    if bad:
        return _o(Status.FAIL, exp, ", ".join(f"{k.path} owned by uid {k.uid}, service uid {c.service_uid}"
                                              for k in bad), [k.path for k in bad])
    return _o(Status.PASS, exp, f"all owned by uid {c.service_uid}")


@check("KEDGE-CLOUD-003")
def cloud_dir_modes(f: Facts) -> Outcome:
    exp = "DIR and DIR/pki mode 0700"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    bad = [d for d in c.dirs if d.exists and not _private(d)]
    missing = [d for d in c.dirs if not d.exists]
    if bad or missing:
        return _o(Status.FAIL, exp, ", ".join([f"{d.path} is {_mode(d.mode)}" for d in bad]
                                              + [f"{d.path} missing" for d in missing]),
                  [d.path for d in bad + missing])
    return _o(Status.PASS, exp, ", ".join(f"{d.path} {_mode(d.mode)}" for d in c.dirs))


@check("KEDGE-CLOUD-004")
def kubeconfig_mode(f: Facts) -> Outcome:
    exp = "DIR/admin.kubeconfig mode 0600"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    if not c.kubeconfig.exists:
        return _skip(exp, "component not present: no admin.kubeconfig")
    if not _private(c.kubeconfig):
        return _o(Status.FAIL, exp, f"mode {_mode(c.kubeconfig.mode)}", [c.kubeconfig.path])
    return _o(Status.PASS, exp, f"mode {_mode(c.kubeconfig.mode)}")


@check("KEDGE-CLOUD-005")
def key_strength(f: Facts) -> Outcome:
    exp = "ECDSA P-256/P-384/P-521, Ed25519/Ed448 or RSA >= 2048 bits"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    certs = [x for x in _all_certs(c) if not x.error]
    if not certs:
        return _o(Status.FAIL, exp, "no readable certificates", [c.root + "/pki"])
    bad, seen = [], []
    for cert in certs:
        ok, desc = _key_ok(cert)
        seen.append(f"{cert.name}: {desc}")
        if not ok:
            bad.append(cert)
    if bad:
        return _o(Status.FAIL, exp, "; ".join(f"{x.name}: {_key_ok(x)[1]}" for x in bad), [x.path for x in bad])
    return _o(Status.PASS, exp, "; ".join(seen))


@check("KEDGE-CLOUD-006")
def cloud_cert_expiry(f: Facts) -> Outcome:
    exp = "every certificate valid now and not within 30 days (or its last third) of expiry"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    if not c.certs:
        return _o(Status.FAIL, exp, "no certificates found in DIR/pki", [c.root + "/pki"])
    verdicts = [(x, *_validity(x, f.now)) for x in c.certs]
    status = _worst(s for _, s, _ in verdicts)
    bad = [(x, msg) for x, s, msg in verdicts if s is not Status.PASS]
    if bad:
        return _o(status, exp, "; ".join(m for _, m in bad), [x.path for x, _ in bad])
    return _o(Status.PASS, exp, "; ".join(m for _, _, m in verdicts))


@check("KEDGE-CLOUD-007")
def ca_validity(f: Facts) -> Outcome:
    exp = "CA cert valid > 30 days, basicConstraints CA:true, keyCertSign"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    ca = c.ca
    if ca is None:
        return _o(Status.FAIL, exp, "DIR/pki/ca.crt missing", [c.root + "/pki/ca.crt"])
    status, msg = _validity(ca, f.now)
    if status is Status.FAIL:
        return _o(status, exp, msg, [ca.path])
    if not ca.is_ca or not ca.key_cert_sign:
        return _o(Status.FAIL, exp, f"CA:{ca.is_ca} keyCertSign:{ca.key_cert_sign}", [ca.path])
    return _o(status, exp, msg, [ca.path] if status is not Status.PASS else [])


@check("KEDGE-CLOUD-008")
def certs_chain_to_ca(f: Facts) -> Outcome:
    exp = "every certificate in DIR/pki verifies against DIR/pki/ca.crt"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    if c.ca is None or c.ca.error:
        return _o(Status.FAIL, exp, "cluster CA missing or unreadable", [c.root + "/pki/ca.crt"])
    bad = [x for x in c.certs if x.error or x.signed_by_ca is False]
    if bad:
        return _o(Status.FAIL, exp, ", ".join(f"{x.name}: {x.error or 'not issued by the cluster CA'}" for x in bad),
                  [x.path for x in bad])
    return _o(Status.PASS, exp, f"{len(c.certs)} certificates issued by the cluster CA")


@check("KEDGE-CLOUD-009")
def hub_sans(f: Facts) -> Outcome:
    exp = "hub.crt SANs include every advertise address"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    cfg = _cloud_config(c, exp)
    if isinstance(cfg, Outcome):
        return cfg
    hub = next((x for x in c.certs if x.name == "hub.crt"), None)
    if hub is None or hub.error:
        return _o(Status.FAIL, exp, "hub.crt missing or unreadable", [c.root + "/pki/hub.crt"])
    adv = cfg.get("advertise_addresses") or ["127.0.0.1"]
    missing = [a for a in adv if isinstance(a, str) and _san_key(a) not in hub.sans]
    if missing:
        return _o(Status.FAIL, exp, f"missing {missing}; hub.crt has {list(hub.sans)}", [hub.path])
    return _o(Status.PASS, exp, f"hub.crt SANs {list(hub.sans)}")


@check("KEDGE-CLOUD-010")
def cert_identities(f: Facts) -> Outcome:
    exp = ("admin.crt CN=kedge-admin O=system:masters; no other cert in system:masters; "
           "hub.crt serverAuth only")
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    problems: list[tuple[str, str]] = []
    for x in c.certs:
        if x.error:
            continue
        if x.name == "admin.crt":
            if x.subject_cn != "kedge-admin" or tuple(x.subject_o) != ("system:masters",):
                problems.append((x.path, f"admin.crt is CN={x.subject_cn} O={list(x.subject_o)}"))
        elif "system:masters" in x.subject_o:
            problems.append((x.path, f"{x.name} (CN={x.subject_cn}) is in system:masters"))
        if x.name == "hub.crt" and (CLIENT_AUTH in x.eku or SERVER_AUTH not in x.eku):
            problems.append((x.path, f"hub.crt extended key usage {list(x.eku)}"))
        if x.name == "cloudcore.crt" and x.subject_cn != "system:kedge:cloudcore":
            problems.append((x.path, f"cloudcore.crt is CN={x.subject_cn}"))
    if problems:
        return _o(Status.FAIL, exp, "; ".join(m for _, m in problems), [p for p, _ in problems])
    return _o(Status.PASS, exp, "identities and usages as issued")


@check("KEDGE-CLOUD-011")
def tls_min_version_config(f: Facts) -> Outcome:
    exp = "allow_tls12 false (TLS 1.3 minimum)"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    cfg = _cloud_config(c, exp)
    if isinstance(cfg, Outcome):
        return cfg
    value = cfg.get("allow_tls12", False)
    if value is False:
        return _o(Status.PASS, exp, "allow_tls12 false")
    if value is True:
        return _o(Status.WARN, exp, "allow_tls12 true: TLS 1.2 (ECDHE+AEAD only) accepted", [c.config_path])
    return _o(Status.FAIL, exp, f"allow_tls12 is {value!r}", [c.config_path])


@check("KEDGE-CLOUD-012")
def node_authorization(f: Facts) -> Outcome:
    exp = 'node_authorization "enforce"'
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    cfg = _cloud_config(c, exp)
    if isinstance(cfg, Outcome):
        return cfg
    value = cfg.get("node_authorization", "enforce")
    if value == "enforce":
        return _o(Status.PASS, exp, "enforce")
    return _o(Status.FAIL, exp, f"node_authorization is {value!r}", [c.config_path])


@check("KEDGE-CLOUD-013")
def node_cert_rotation(f: Facts) -> Outcome:
    exp = f"node_cert_validity_s <= {MAX_NODE_CERT_VALIDITY_S} (90 days) so nodes rotate"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    cfg = _cloud_config(c, exp)
    if isinstance(cfg, Outcome):
        return cfg
    if cfg.get("rotate_certificates", True) is not True:
        return _o(Status.FAIL, exp, "rotate_certificates disabled", [c.config_path])
    value = cfg.get("node_cert_validity_s", 30 * 24 * 3600)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return _o(Status.FAIL, exp, f"node_cert_validity_s is {value!r}", [c.config_path])
    if value > HARD_NODE_CERT_VALIDITY_S:
        return _o(Status.FAIL, exp, f"node certificates live {value // 86400} days", [c.config_path])
    if value > MAX_NODE_CERT_VALIDITY_S:
        return _o(Status.WARN, exp, f"node certificates live {value // 86400} days", [c.config_path])
    return _o(Status.PASS, exp, f"node certificates live {value // 86400} days")


@check("KEDGE-CLOUD-014")
def crl_present(f: Facts) -> Outcome:
    exp = "DIR/pki/crl.pem present, signed by the CA, nextUpdate in the future"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    crl = c.crl
    if not crl.exists:
        return _o(Status.FAIL, exp, "crl.pem missing", [crl.path])
    if crl.error:
        return _o(Status.FAIL, exp, f"crl.pem unreadable: {crl.error}", [crl.path])
    if crl.signed_by_ca is not True:
        return _o(Status.FAIL, exp, "crl.pem is not signed by the cluster CA", [crl.path])
    if crl.next_update is not None and crl.next_update <= f.now:
        return _o(Status.WARN, exp, f"stale: nextUpdate {crl.next_update.isoformat()} passed", [crl.path])
    return _o(Status.PASS, exp, f"{crl.revoked} revoked serials, next update "
              f"{crl.next_update.isoformat() if crl.next_update else 'unset'}")


@check("KEDGE-CLOUD-015")
def token_ttl(f: Facts) -> Outcome:
    exp = f"token_default_ttl_s <= {MAX_TOKEN_TTL_S}"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    cfg = _cloud_config(c, exp)
    if isinstance(cfg, Outcome):
        return cfg
    value = cfg.get("token_default_ttl_s", 900)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return _o(Status.FAIL, exp, f"token_default_ttl_s is {value!r}", [c.config_path])
    if value > HARD_TOKEN_TTL_S:
        return _o(Status.FAIL, exp, f"default token TTL {value} s", [c.config_path])
    if value > MAX_TOKEN_TTL_S:
        return _o(Status.WARN, exp, f"default token TTL {value} s", [c.config_path])
    return _o(Status.PASS, exp, f"default token TTL {value} s")


@check("KEDGE-CLOUD-016")
def tokens_hashed(f: Facts) -> Outcome:
    exp = "token secrets stored only as hashes; no token in any file"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    problems: list[tuple[str, str]] = []
    if c.tokens is not None:
        if c.tokens.error:
            return _o(Status.ERROR, exp, f"state.db tokens unreadable: {c.tokens.error}", [c.tokens.db_path])
        for row in c.tokens.rows:
            if row.secret_hash is None or not _HASHED.fullmatch(row.secret_hash):
                problems.append((c.tokens.db_path, f"token {row.token_id!r} stored unhashed in state.db"))
    for hit in c.plaintext_hits:
        problems.append((hit.path, f"{hit.kind} in {hit.path}:{hit.line}"))
    if problems:
        return _o(Status.FAIL, exp, "; ".join(m for _, m in problems), [p for p, _ in problems])
    n = len(c.tokens.rows) if c.tokens is not None else 0
    return _o(Status.PASS, exp, f"{n} stored tokens hashed; no plaintext token in data dir files")


@check("KEDGE-CLOUD-017")
def tokens_single_use(f: Facts) -> Outcome:
    exp = f"no stored token with a lifetime over {HARD_TOKEN_TTL_S} s"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    if c.tokens is None:
        return _skip(exp, "component not present: no state.db")
    if c.tokens.error:
        return _o(Status.ERROR, exp, f"state.db tokens unreadable: {c.tokens.error}", [c.tokens.db_path])
    long_lived = [r for r in c.tokens.rows if r.created_at is not None and r.expires_at is not None
                  and r.expires_at - r.created_at > HARD_TOKEN_TTL_S]
    if long_lived:
        return _o(Status.FAIL, exp, ", ".join(f"token {r.token_id!r} lives "
                                              f"{int((r.expires_at or 0) - (r.created_at or 0))} s"
                                              for r in long_lived), [c.tokens.db_path])
    used = sum(1 for r in c.tokens.rows if r.used)
    return _o(Status.PASS, exp, f"{len(c.tokens.rows)} tokens ({used} consumed), none long-lived")


@check("KEDGE-CLOUD-018")
def audit_logging(f: Facts) -> Outcome:
    exp = "audit_log configured; log file 0600"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    cfg = _cloud_config(c, exp)
    if isinstance(cfg, Outcome):
        return cfg
    value = cfg.get("audit_log", "audit.log")
    if not isinstance(value, str) or not value.strip():
        return _o(Status.FAIL, exp, f"audit_log is {value!r}: security events are not recorded", [c.config_path])
    log = c.audit_log
    loose = [x for x in ((log,) if log is not None else ()) + c.extra_logs if x.exists and not _private(x)]
    if loose:
        return _o(Status.FAIL, exp, ", ".join(f"{x.path} is {_mode(x.mode)}" for x in loose), [x.path for x in loose])
    if log is None or not log.exists:
        return _o(Status.PASS, exp, f"audit_log {value!r} (created on first event)")
    return _o(Status.PASS, exp, f"{log.path} {_mode(log.mode)}")


@check("KEDGE-CLOUD-019")
def limits_configured(f: Facts) -> Outcome:
    exp = "limit overrides known, positive and below their ceilings"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    cfg = _cloud_config(c, exp)
    if isinstance(cfg, Outcome):
        return cfg
    overrides = cfg.get("limits", {}) or {}
    if not isinstance(overrides, dict):
        return _o(Status.FAIL, exp, "limits is not an object", [c.config_path])
    bad = []
    for name, value in sorted(overrides.items()):
        if name not in KNOWN_LIMITS:
            bad.append(f"unknown limit {name}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            bad.append(f"{name}={value!r} disables the bound")
        elif name in LIMIT_CEILINGS and value > LIMIT_CEILINGS[name]:
            bad.append(f"{name}={value} exceeds {LIMIT_CEILINGS[name]:g}")
    if bad:
        return _o(Status.FAIL, exp, "; ".join(bad), [c.config_path])
    return _o(Status.PASS, exp, f"{len(overrides)} overrides, all within bounds" if overrides else "defaults")


@check("KEDGE-CLOUD-020")
def state_db_mode(f: Facts) -> Outcome:
    exp = "DIR/state.db and DIR/api.db mode 0600"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    dbs = [x for x in (c.state_db, c.api_db) if x is not None and x.exists]
    if not dbs:
        return _skip(exp, "component not present: no state.db or api.db")
    bad = [x for x in dbs if not _private(x)]
    if bad:
        return _o(Status.FAIL, exp, ", ".join(f"{x.path} is {_mode(x.mode)}" for x in bad), [x.path for x in bad])
    return _o(Status.PASS, exp, ", ".join(f"{PurePath(x.path).name} {_mode(x.mode)}" for x in dbs))


@check("KEDGE-CLOUD-021")
def secrets_encrypted_at_rest(f: Facts) -> Outcome:
    exp = "every Secret in DIR/api.db sealed (k8s:enc:aesgcm:v1), key file DIR/pki/encryption.json 0600"
    c = f.cloud
    if c is None:
        return _no_cloud(exp)
    s = c.secrets_at_rest
    if s is None:
        return _skip(exp, "component not present: no DIR/api.db (API server not run here, or a real cluster's "
                          "kube-apiserver: check its --encryption-provider-config)")
    if s.error:
        return _o(Status.ERROR, exp, f"{s.db_path} unreadable: {s.error}", [s.db_path])
    bad = []
    if s.plain:
        bad.append(f"{s.plain} Secret row(s) stored in plaintext")
    if not s.config.exists:
        bad.append("no encryption key file")
    elif not _private(s.config):
        bad.append(f"{s.config.path} is {_mode(s.config.mode)}")
    if bad:
        return _o(Status.FAIL, exp, ", ".join(bad), [s.db_path, s.config.path])
    return _o(Status.PASS, exp, f"{s.sealed} sealed Secret row(s), 0 in plaintext, key file {_mode(s.config.mode)}")


# --------------------------------------------------------------------------- cluster: live probes


def _probes(f: Facts, roles: tuple[str, ...] | None = None) -> list[ProbeFacts]:
    """Probes of these roles; by default every cloud listener (the edge's MQTT broker has its own check)."""
    if roles is None:
        return [p for p in f.probes if p.role != "mqtt"]
    return [p for p in f.probes if p.role in roles]


def _probe_loc(f: Facts) -> list[str]:
    if f.cloud is not None:
        return [f.cloud.root + "/endpoints.json"]
    return []


def _probe_error(p: ProbeFacts) -> tuple[Status, str]:
    """A probe that could not run: ERROR -- except a listener that endpoints.json still
    names but that refuses connections on a loopback address, which is a stopped service
    (SKIP, reported), not an incomplete audit. An endpoint given with --endpoint always
    counts: the operator asked for it."""
    if p.not_running:
        return Status.SKIP, f"{p.url}: not listening (service stopped?): {p.error}"
    return Status.ERROR, f"{p.url}: probe failed: {p.error}"


def _no_probe(exp: str, what: str = "live endpoint") -> Outcome:
    return _skip(exp, f"component not present: no {what} probed (--endpoint or DIR/endpoints.json)")


@check("KEDGE-CLUSTER-001")
def hub_requires_client_cert(f: Facts) -> Outcome:
    exp = "hub handshake without a client certificate is refused"
    probes = _probes(f, ("hub",))
    if not probes:
        return _no_probe(exp, "hub endpoint")
    results = []
    for p in probes:
        if p.error:
            results.append(_probe_error(p))
        elif p.no_client_cert == "refused":
            results.append((Status.PASS, f"{p.url}: refused"))
        elif p.no_client_cert == "accepted":
            results.append((Status.FAIL, f"{p.url}: served a request without a client certificate"))
        else:
            results.append((Status.ERROR, f"{p.url}: could not determine ({p.no_client_cert})"))
    status = _worst(s for s, _ in results)
    return _o(status, exp, "; ".join(m for _, m in results), _probe_loc(f) if status is not Status.PASS else [])


@check("KEDGE-CLUSTER-002")
def tls_versions(f: Facts) -> Outcome:
    exp = "TLS 1.0/1.1 refused; TLS 1.2 only where allow_tls12; TLS 1.3 accepted"
    probes = _probes(f)
    if not probes:
        return _no_probe(exp)
    allow12 = None
    if f.cloud is not None and isinstance(f.cloud.config, dict):
        allow12 = f.cloud.config.get("allow_tls12", False) is True
    results = []
    for p in probes:
        if p.error:
            results.append(_probe_error(p))
            continue
        notes, status = [], Status.PASS
        for old in ("TLSv1", "TLSv1.1"):
            state = p.version(old)
            if state == "accepted":
                status = Status.FAIL
                notes.append(f"{old} accepted")
            elif state == "unavailable":
                notes.append(f"{old} not testable (local OpenSSL will not offer it)")
        if p.version("TLSv1.2") == "accepted":
            if allow12 is False:
                status = Status.FAIL
                notes.append("TLSv1.2 accepted although allow_tls12 is false")
            elif allow12 is None:
                status = _worst([status, Status.WARN])
                notes.append("TLSv1.2 accepted")
            else:
                notes.append("TLSv1.2 accepted (allowed)")
        if p.version("TLSv1.3") != "accepted":
            status = _worst([status, Status.WARN])
            notes.append(f"TLSv1.3 {p.version('TLSv1.3')}")
        if status is Status.PASS and any("not testable" in n for n in notes):
            status = Status.INFO
        results.append((status, f"{p.url}: {', '.join(notes) or 'TLSv1.3 only'}"))
    status = _worst(s for s, _ in results)
    return _o(status, exp, "; ".join(m for _, m in results),
              _probe_loc(f) if status in (Status.FAIL, Status.WARN) else [])


@check("KEDGE-CLUSTER-003")
def tls12_ciphers(f: Facts) -> Outcome:
    exp = "on TLS 1.2 only ECDHE key exchange with AEAD ciphers (no CBC, no static RSA/DHE)"
    probes = _probes(f)
    if not probes:
        return _no_probe(exp)
    results = []
    for p in probes:
        if p.error:
            results.append(_probe_error(p))
            continue
        if p.version("TLSv1.2") != "accepted":
            results.append((Status.PASS, f"{p.url}: TLS 1.2 not accepted"))
            continue
        bad = []
        if p.tls12_cbc == "accepted":
            bad.append("CBC cipher accepted")
        if p.tls12_non_ecdhe == "accepted":
            bad.append("non-ECDHE key exchange accepted")
        results.append((Status.FAIL if bad else Status.PASS, f"{p.url}: {', '.join(bad) or 'AEAD+ECDHE only'}"))
    status = _worst(s for s, _ in results)
    return _o(status, exp, "; ".join(m for _, m in results), _probe_loc(f) if status is Status.FAIL else [])


@check("KEDGE-CLUSTER-004")
def served_cert(f: Facts) -> Outcome:
    exp = "served certificate issued by the cluster CA, SAN matches the probed host"
    probes = _probes(f)
    if not probes:
        return _no_probe(exp)
    results = []
    for p in probes:
        if p.error:
            results.append(_probe_error(p))
            continue
        cert = p.peer_cert
        if cert is None and p.no_client_cert == "refused":
            results.append((Status.INFO, f"{p.url}: certificate not retrievable without a client certificate"))
            continue
        if cert is None or cert.error:
            results.append((Status.FAIL, f"{p.url}: no readable certificate served"))
            continue
        problems = []
        if cert.signed_by_ca is False:
            problems.append("not issued by the cluster CA")
        if _san_key(p.host) not in cert.sans:
            problems.append(f"SANs {list(cert.sans)} do not name {p.host}")
        if problems:
            results.append((Status.FAIL, f"{p.url}: {', '.join(problems)}"))
        elif cert.signed_by_ca is None:
            results.append((Status.INFO, f"{p.url}: no cluster CA given to compare against"))
        else:
            results.append((Status.PASS, f"{p.url}: {cert.subject_cn}, cluster CA"))
    status = _worst(s for s, _ in results)
    return _o(status, exp, "; ".join(m for _, m in results), _probe_loc(f) if status is Status.FAIL else [])


@check("KEDGE-CLUSTER-005")
def anonymous_api(f: Facts) -> Outcome:
    exp = "anonymous API request answered 401"
    probes = _probes(f, ("api",))
    if not probes:
        return _no_probe(exp, "API server endpoint")
    results = []
    for p in probes:
        if p.error:
            results.append(_probe_error(p))
        elif p.anonymous_status == 401:
            results.append((Status.PASS, f"{p.url}: 401"))
        elif p.anonymous_status is None:
            results.append((Status.ERROR, f"{p.url}: no HTTP answer ({p.anonymous_detail})"))
        else:
            results.append((Status.FAIL, f"{p.url}: anonymous request answered {p.anonymous_status}"))
    status = _worst(s for s, _ in results)
    return _o(status, exp, "; ".join(m for _, m in results), _probe_loc(f) if status is Status.FAIL else [])


@check("KEDGE-CLUSTER-006")
def oversized_body(f: Facts) -> Outcome:
    exp = "POST of 1 MiB to /edge.crt answered 413 or connection closed"
    probes = _probes(f, ("certs",))
    if not probes:
        return _no_probe(exp, "certificate endpoint")
    results = []
    for p in probes:
        if p.error:
            results.append(_probe_error(p))
        elif p.oversized in ("413", "closed") or p.oversized.startswith("refused-early"):
            results.append((Status.PASS, f"{p.url}: {p.oversized}"))
        elif p.oversized.startswith("accepted"):
            results.append((Status.FAIL, f"{p.url}: body read and answered {p.oversized.split(':', 1)[-1]}"))
        else:
            results.append((Status.ERROR, f"{p.url}: could not determine ({p.oversized})"))
    status = _worst(s for s, _ in results)
    return _o(status, exp, "; ".join(m for _, m in results), _probe_loc(f) if status is Status.FAIL else [])


@check("KEDGE-CLUSTER-012")
def csr_needs_credentials(f: Facts) -> Outcome:
    exp = "POST /edge.crt without token or client certificate answered 401 (or 429)"
    probes = _probes(f, ("certs",))
    if not probes:
        return _no_probe(exp, "certificate endpoint")
    results = []
    for p in probes:
        if p.error:
            results.append(_probe_error(p))
        elif p.unauthenticated_csr in (401, 403, 429):
            results.append((Status.PASS, f"{p.url}: {p.unauthenticated_csr}"))
        elif p.unauthenticated_csr is None:
            results.append((Status.ERROR, f"{p.url}: no HTTP answer"))
        else:
            results.append((Status.FAIL, f"{p.url}: unauthenticated request answered {p.unauthenticated_csr}"))
    status = _worst(s for s, _ in results)
    return _o(status, exp, "; ".join(m for _, m in results), _probe_loc(f) if status is Status.FAIL else [])


# --------------------------------------------------------------------------- cluster: RBAC


def _is_node_identity(kind: str, name: str) -> bool:
    return (kind, name) in NODE_IDENTITIES or (kind == "User" and name.startswith("system:node:"))


def _no_rbac(exp: str) -> Outcome:
    return _skip(exp, "component not present: no RBAC objects (API server store DIR/api.db or DIR/manifests/)")


@check("KEDGE-CLUSTER-007")
def no_cluster_admin_for_nodes(f: Facts) -> Outcome:
    exp = "no binding of cluster-admin to system:nodes, system:node:*, or cloudcore"
    rbac = f.cloud.rbac if f.cloud is not None else None
    if rbac is None:
        return _no_rbac(exp)
    bad = [b for b in rbac.bindings if b.role_name == "cluster-admin"
           and any(_is_node_identity(k, n) for k, n in b.subjects)]
    if bad:
        return _o(Status.FAIL, exp, "; ".join(
            f"{b.kind} {b.name} binds cluster-admin to "
            f"{[n for k, n in b.subjects if _is_node_identity(k, n)]}" for b in bad), [b.path for b in bad])
    return _o(Status.PASS, exp, f"{len(rbac.bindings)} bindings checked ({rbac.source})")


@check("KEDGE-CLUSTER-008")
def no_wildcards_for_nodes(f: Facts) -> Outcome:
    exp = "roles bound to nodes or cloudcore list verbs, resources and apiGroups explicitly"
    rbac = f.cloud.rbac if f.cloud is not None else None
    if rbac is None:
        return _no_rbac(exp)
    roles = {(r.kind, r.name, r.namespace if r.kind == "Role" else None): r for r in rbac.roles}
    bad = []
    for b in rbac.bindings:
        if not any(_is_node_identity(k, n) for k, n in b.subjects):
            continue
        ns = b.namespace if b.role_kind == "Role" else None
        role = roles.get((b.role_kind, b.role_name, ns))
        if role is None:
            continue
        for groups, resources, verbs in role.rules:
            if "*" in groups or "*" in resources or "*" in verbs:
                bad.append((b, role))
                break
    if bad:
        return _o(Status.FAIL, exp, "; ".join(f"{b.kind} {b.name} -> {r.kind} {r.name} has '*'" for b, r in bad),
                  [r.path for _, r in bad] + [b.path for b, _ in bad])
    return _o(Status.PASS, exp, f"no wildcard rules reachable by node identities ({rbac.source})")


@check("KEDGE-CLUSTER-009")
def no_unauthenticated_bindings(f: Facts) -> Outcome:
    exp = "no binding to system:anonymous or system:unauthenticated"
    rbac = f.cloud.rbac if f.cloud is not None else None
    if rbac is None:
        return _no_rbac(exp)
    bad = [b for b in rbac.bindings if any((k, n) in UNAUTHENTICATED for k, n in b.subjects)]
    if bad:
        return _o(Status.FAIL, exp, "; ".join(f"{b.kind} {b.name} -> {b.role_name}" for b in bad),
                  [b.path for b in bad])
    return _o(Status.PASS, exp, f"{len(rbac.bindings)} bindings checked ({rbac.source})")


# --------------------------------------------------------------------------- cluster: supply chain


def _version_tuple(text: str) -> tuple[int, ...] | None:
    m = re.match(r"^v?([0-9]+(?:\.[0-9]+){0,3})", text.strip())
    if not m:
        return None
    return tuple(int(x) for x in m.group(1).split("."))


@check("KEDGE-CLUSTER-010")
def supported_version(f: Facts) -> Outcome:
    exp = f"kedge >= {f.oldest_supported}"
    have, oldest = _version_tuple(f.version), _version_tuple(f.oldest_supported)
    if have is None or oldest is None:
        return _o(Status.FAIL, exp, f"unrecognised version {f.version!r}")
    width = max(len(have), len(oldest))
    pad = lambda t: t + (0,) * (width - len(t))  # noqa: E731
    if pad(have) < pad(oldest):
        return _o(Status.FAIL, exp, f"kedge {f.version} is out of support")
    return _o(Status.PASS, exp, f"kedge {f.version}")


@check("KEDGE-CLUSTER-011")
def distribution_signature(f: Facts) -> Outcome:
    return _o(Status.INFO, "the installed release verifies with `kedge verify` against its provenance",
              "manual check: verify the artifact you installed (not automatable from an installed tree)")


# --------------------------------------------------------------------------- edge


@check("KEDGE-EDGE-001")
def node_key(f: Facts) -> Outcome:
    exp = "EDGEDIR/pki/node.key mode 0600, owned by the service user"
    e = f.edge
    if e is None:
        return _no_edge(exp)
    k = e.node_key
    if not k.exists:
        return _o(Status.FAIL, exp, "node.key missing", [k.path])
    problems = []
    if not _private(k):
        problems.append(f"mode {_mode(k.mode)}")
    if e.service_uid is not None and k.uid != e.service_uid:
        problems.append(f"owned by uid {k.uid}, service uid {e.service_uid}")
    if problems:
        return _o(Status.FAIL, exp, ", ".join(problems), [k.path])
    return _o(Status.PASS, exp, f"mode {_mode(k.mode)}")


@check("KEDGE-EDGE-002")
def edge_dir_modes(f: Facts) -> Outcome:
    exp = "EDGEDIR and EDGEDIR/pki mode 0700"
    e = f.edge
    if e is None:
        return _no_edge(exp)
    bad = [d for d in e.dirs if not d.exists or not _private(d)]
    if bad:
        return _o(Status.FAIL, exp, ", ".join(f"{d.path} is {_mode(d.mode)}" for d in bad), [d.path for d in bad])
    return _o(Status.PASS, exp, ", ".join(f"{d.path} {_mode(d.mode)}" for d in e.dirs))


@check("KEDGE-EDGE-003")
def node_cert(f: Facts) -> Outcome:
    exp = "node.crt valid (not in its last third or 30 days), CN=system:node:<node_name>, O=system:nodes, issued by pinned CA"
    e = f.edge
    if e is None:
        return _no_edge(exp)
    cert = e.node_cert
    if cert is None:
        return _o(Status.FAIL, exp, "node.crt missing", [e.root + "/pki/node.crt"])
    status, msg = _validity(cert, f.now)
    if status is Status.FAIL:
        return _o(status, exp, msg, [cert.path])
    problems = []
    name = (e.config or {}).get("node_name") if isinstance(e.config, dict) else None
    if name is not None and cert.subject_cn != f"system:node:{name}":
        problems.append(f"CN={cert.subject_cn}, node_name {name!r}")
    if name is None and not (cert.subject_cn or "").startswith("system:node:"):
        problems.append(f"CN={cert.subject_cn}")
    if tuple(cert.subject_o) != ("system:nodes",):
        problems.append(f"O={list(cert.subject_o)}")
    if cert.signed_by_ca is not True:
        problems.append("not issued by the pinned CA" if cert.signed_by_ca is False else "pinned CA missing")
    if problems:
        return _o(Status.FAIL, exp, "; ".join(problems), [cert.path])
    return _o(status, exp, f"{cert.subject_cn}; {msg}", [cert.path] if status is not Status.PASS else [])


@check("KEDGE-EDGE-004")
def edge_db_mode(f: Facts) -> Outcome:
    exp = "EDGEDIR/edge.db mode 0600"
    e = f.edge
    if e is None:
        return _no_edge(exp)
    if not e.edge_db.exists:
        return _skip(exp, "component not present: no edge.db")
    if not _private(e.edge_db):
        return _o(Status.FAIL, exp, f"mode {_mode(e.edge_db.mode)}", [e.edge_db.path])
    return _o(Status.PASS, exp, f"mode {_mode(e.edge_db.mode)}")


@check("KEDGE-EDGE-005")
def edge_secrets_encrypted(f: Facts) -> Outcome:
    exp = "EDGEDIR/edge.key present with mode 0600 wherever edge.db holds secrets"
    e = f.edge
    if e is None:
        return _no_edge(exp)
    if not e.edge_db.exists:
        return _skip(exp, "component not present: no edge.db")
    if not e.edge_key.exists:
        return _o(Status.FAIL, exp, "edge.key missing: secrets cannot be encrypted at rest", [e.edge_key.path])
    if not _private(e.edge_key):
        return _o(Status.FAIL, exp, f"edge.key mode {_mode(e.edge_key.mode)}", [e.edge_key.path])
    return _o(Status.PASS, exp, f"edge.key mode {_mode(e.edge_key.mode)}")


@check("KEDGE-EDGE-006")
def edge_urls_tls(f: Facts) -> Outcome:
    exp = "EDGEDIR/config.json hub wss://, certs https://"
    e = f.edge
    if e is None:
        return _no_edge(exp)
    if e.config_error or e.config is None:
        return _o(Status.FAIL, exp, f"config.json {e.config_error or 'missing'}", [e.config_path])
    bad = []
    for key, scheme in (("hub", "wss://"), ("certs", "https://")):
        value = e.config.get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith(scheme)):
            bad.append(f"{key}={value!r}")
    if bad:
        return _o(Status.FAIL, exp, ", ".join(bad), [e.config_path])
    return _o(Status.PASS, exp, f"hub={e.config.get('hub')!r} certs={e.config.get('certs')!r}")


def _mqtt(f: Facts, exp: str) -> EdgeFacts | Outcome:
    e = f.edge
    if e is None:
        return _no_edge(exp)
    if e.mqtt is None:
        if e.mqtt_external:
            return _skip(exp, "component not present: the node uses an operator's MQTT broker (edge config "
                              "mqtt_broker), whose configuration is not visible here; KEDGE-EDGE-010 probes it")
        return _skip(exp, "component not present: no EDGEDIR/mosquitto/mosquitto.conf")
    if e.mqtt.error:
        return _o(Status.ERROR, exp, f"mosquitto.conf unreadable: {e.mqtt.error}", [e.mqtt.conf_path])
    return e


@check("KEDGE-EDGE-007")
def mqtt_loopback(f: Facts) -> Outcome:
    exp = "every MQTT listener bound to a loopback address (or a unix socket)"
    e = _mqtt(f, exp)
    if isinstance(e, Outcome):
        return e
    assert e.mqtt is not None  # nosec B101 - checked by _mqtt
    bad = [li for li in e.mqtt.listeners if li.socket_path is None and not _loopback(li.address)]
    if bad:
        return _o(Status.FAIL, exp, ", ".join(f"port {li.port} on {li.address or 'all interfaces (0.0.0.0)'}"
                                              for li in bad), [e.mqtt.conf_path])
    return _o(Status.PASS, exp, f"{len(e.mqtt.listeners)} listeners, all local")


@check("KEDGE-EDGE-008")
def mqtt_tls(f: Facts) -> Outcome:
    exp = "every MQTT network listener has TLS (certfile/keyfile) and require_certificate true"
    e = _mqtt(f, exp)
    if isinstance(e, Outcome):
        return e
    assert e.mqtt is not None  # nosec B101 - checked by _mqtt
    bad = []
    for li in e.mqtt.listeners:
        if li.socket_path is not None:
            continue
        if not li.tls:
            bad.append(f"port {li.port} without TLS")
        elif not li.require_certificate:
            bad.append(f"port {li.port} does not require client certificates")
    if bad:
        return _o(Status.FAIL, exp, ", ".join(bad), [e.mqtt.conf_path])
    return _o(Status.PASS, exp, "all network listeners TLS with client certificates")


def mqtt_probe_problems(p: ProbeFacts) -> list[str]:
    """What a live-probed MQTT broker gets wrong (empty: TLS 1.3 only, clear text and
    certificate-less clients refused). Also edgecore's start-up check of an operator's broker."""
    bad = [old for old in ("TLSv1", "TLSv1.1", "TLSv1.2") if p.version(old) == "accepted"]
    if p.version("TLSv1.3") != "accepted":
        bad.append("no TLS 1.3 handshake")
    if p.plaintext == "accepted":
        bad.append("answered a clear-text CONNECT")
    if p.no_client_cert == "accepted":
        bad.append("answered a client without a certificate")
    return bad


@check("KEDGE-EDGE-010")
def mqtt_live(f: Facts) -> Outcome:
    exp = ("the MQTT broker in EDGEDIR/endpoints.json, probed live, accepts only TLS 1.3 and answers no "
           "clear-text CONNECT and no client without a certificate")
    probes = _probes(f, ("mqtt",))
    if not probes:
        if f.edge is None:
            return _no_edge(exp)
        return _skip(exp, "component not present: no running MQTT broker named in EDGEDIR/endpoints.json")
    loc = [f.edge.root + "/endpoints.json"] if f.edge is not None else []
    results = []
    for p in probes:
        if p.error:
            results.append(_probe_error(p))
            continue
        bad = mqtt_probe_problems(p)
        if bad:
            results.append((Status.FAIL, f"{p.url}: " + ", ".join(bad)))
        else:
            results.append((Status.PASS, f"{p.url}: TLS 1.3 only, clear text and certificate-less clients refused"))
    status = _worst(s for s, _ in results)
    return _o(status, exp, "; ".join(m for _, m in results), loc if status is not Status.PASS else [])


MQTT_RENEW_BEFORE = dt.timedelta(days=7)  # kedge.edge.devicetwin.RENEW_BEFORE


@check("KEDGE-EDGE-011")
def mqtt_credentials(f: Facts) -> Outcome:
    exp = ("edgecore's MQTT keys mode 0600 and owned by the service user; its MQTT certificates issued by "
           "the broker's CA, valid and not past their renewal point")
    e = f.edge
    if e is None:
        return _no_edge(exp)
    if not e.mqtt_keys and not e.mqtt_certs:
        return _skip(exp, "component not present: no MQTT credentials (devices not set up)")
    bad, where, warn = [], [], []
    for k in e.mqtt_keys:
        if not k.exists:
            bad.append(f"{k.path} missing")
        elif not _private(k) or (e.service_uid is not None and k.uid != e.service_uid):
            bad.append(f"{k.path} mode {_mode(k.mode)} uid {k.uid}")
        else:
            continue
        where.append(k.path)
    for c in e.mqtt_certs:
        status, msg = _validity(c, f.now)
        if status is Status.FAIL:
            bad.append(msg)
        elif c.signed_by_ca is False:
            bad.append(f"{c.name}: not issued by the broker's CA")
            status = Status.FAIL
        else:
            assert c.not_before is not None and c.not_after is not None  # nosec B101 - parsed (no FAIL)
            # edgecore renews at min(7 days, a third of the lifetime) before expiry: only a
            # certificate past that point means renewal is not happening.
            window = min(MQTT_RENEW_BEFORE, (c.not_after - c.not_before) / 3)
            status = Status.WARN if c.not_after - f.now < window else Status.PASS
            if status is Status.WARN:
                warn.append(f"{c.name}: past its renewal point, expires {c.not_after.isoformat()}")
        if status is not Status.PASS:
            where.append(c.path)
    if bad:
        return _o(Status.FAIL, exp, "; ".join(bad + warn), where)
    if warn:
        return _o(Status.WARN, exp, "; ".join(warn) + " (edgecore renews them while it runs)", where)
    note = "; the operator's broker: its per-device ACL is not checked here" if e.mqtt_external else ""
    return _o(Status.PASS, exp, f"{len(e.mqtt_keys)} key(s) private, {len(e.mqtt_certs)} certificate(s) valid{note}")


@check("KEDGE-EDGE-009")
def mqtt_acl(f: Facts) -> Outcome:
    exp = "allow_anonymous false and acl_file set for every listener"
    e = _mqtt(f, exp)
    if isinstance(e, Outcome):
        return e
    m = e.mqtt
    assert m is not None  # nosec B101 - checked by _mqtt
    bad = []
    for li in m.listeners or (_EMPTY_LISTENER,):
        anon = li.allow_anonymous if m.per_listener_settings else m.global_allow_anonymous
        acl = li.acl_file if m.per_listener_settings else m.global_acl_file
        where = f"port {li.port}" if li.port is not None else "default listener"
        if anon is True:
            bad.append(f"{where}: allow_anonymous true")
        if not acl:
            bad.append(f"{where}: no acl_file")
    if bad:
        return _o(Status.FAIL, exp, ", ".join(bad), [m.conf_path])
    return _o(Status.PASS, exp, "anonymous off, ACL configured")


# --------------------------------------------------------------------------- systemd units


def _unit_data_dir(eff: unit_policy.Effective) -> str | None:
    words = eff.scalars.get("ExecStart", "").split()
    for i, w in enumerate(words[:-1]):
        if w == "--data-dir":
            return words[i + 1].strip('"')
    return None


def _systemd_unit(f: Facts, role: str) -> Outcome:
    name = unit_policy.UNIT_NAMES[role]
    goal = unit_policy.EXPOSURE_GOALS[role]
    exp = (f"installed {name} (with its drop-ins) meets kedge's unit policy (kedge systemd) and "
           f"`systemd-analyze security` exposure <= {goal}")
    part: CloudFacts | EdgeFacts | None = f.cloud if role == unit_policy.CLOUD else f.edge
    if part is None:
        return _no_cloud(exp) if role == unit_policy.CLOUD else _no_edge(exp)
    u = part.systemd_unit
    if u is None:
        where = ", ".join(part.systemd_dirs) or "the systemd unit directories"
        return _skip(exp, f"component not present: no {name} in {where}")
    if u.error:
        return _o(Status.FAIL, exp, f"unit unreadable: {u.error}", [u.path])
    locations = [p for p, _ in u.files]
    try:
        assignments = [a for path, text in u.files for a in unit_policy.parse(text, path)]
    except unit_policy.UnitSyntaxError as exc:
        return _o(Status.FAIL, exp, f"not a unit file: {exc}", locations)
    eff = unit_policy.merge(assignments)
    problems = unit_policy.evaluate(role, eff)
    if u.exposure is not None and u.exposure > goal:
        problems.insert(0, f"exposure {u.exposure:.1f} > {goal}")
    notes = [f"exposure {u.exposure:.1f}" if u.exposure is not None else f"exposure not measured ({u.analyze_error})"]
    if len(u.files) > 1:
        notes.append(f"{len(u.files) - 1} drop-in(s) applied")
    runs_on = _unit_data_dir(eff)
    if runs_on is not None and PurePath(runs_on) != PurePath(part.root):
        notes.append(f"note: the unit runs on {runs_on}, not the audited {part.root}")
    if problems:
        return _o(Status.FAIL, exp, "missing or weakened: " + "; ".join(problems) + " (" + "; ".join(notes) + ")",
                  locations)
    return _o(Status.PASS, exp, "; ".join(notes))


@check("KEDGE-CLOUD-022")
def cloud_systemd_unit(f: Facts) -> Outcome:
    return _systemd_unit(f, unit_policy.CLOUD)


@check("KEDGE-EDGE-012")
def edge_systemd_unit(f: Facts) -> Outcome:
    return _systemd_unit(f, unit_policy.EDGE)
