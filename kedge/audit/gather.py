"""The static I/O layer: read a cloud or edge data directory into :mod:`kedge.audit.facts`.

Everything is read-only and bounded (file sizes, file counts, rows, directory depth):
an audit must be safe to point at a directory somebody else controls. Parse failures
become ``error`` strings on the facts (the checks turn them into FAIL/ERROR); nothing
here decides pass or fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import stat
from pathlib import Path
from typing import Any, Sequence

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from kedge._internal import fsutil
from kedge.audit.facts import (
    Binding,
    CertInfo,
    CloudFacts,
    CrlInfo,
    EdgeFacts,
    FileStat,
    MqttFacts,
    MqttListener,
    PlaintextHit,
    RbacFacts,
    RoleRules,
    SecretsAtRest,
    SystemdUnitFacts,
    TokenFacts,
    TokenRow,
)

MAX_PEM_BYTES = 256 * 1024
MAX_JSON_BYTES = 1024 * 1024
MAX_SCAN_FILES = 500
MAX_SCAN_BYTES = 8 * 1024 * 1024
MAX_SCAN_DEPTH = 4
MAX_TOKEN_ROWS = 10_000
MAX_MANIFEST_FILES = 200
MAX_MANIFEST_DOCS = 5_000
MAX_MQTT_CONF_BYTES = 256 * 1024
MAX_UNIT_BYTES = 256 * 1024
MAX_DROPINS = 64
# Where systemd looks for system units, highest precedence first (systemd.unit(5)).
SYSTEMD_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
                "/usr/lib/systemd/system", "/lib/systemd/system")

# kedge bootstrap token: <64 hex CA hash>.<6 id>.<43 base64url secret> (kedge/pki/tokens.py).
_TOKEN_BYTES = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}\.[a-z0-9]{6}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
_CLOUD_CERTS = ("hub.crt", "admin.crt", "cloudcore.crt")


# --------------------------------------------------------------------------- files


def stat_path(path: str | Path) -> FileStat:
    p = str(path)
    try:
        lst = os.lstat(p)
    except OSError:
        return FileStat(path=p, exists=False)
    is_link = stat.S_ISLNK(lst.st_mode)
    try:
        st = os.stat(p) if is_link else lst
    except OSError:
        return FileStat(path=p, exists=False, is_symlink=True)
    return FileStat(path=p, exists=True, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                    is_dir=stat.S_ISDIR(st.st_mode), is_symlink=is_link)


def _read_bounded(path: Path, limit: int) -> bytes:
    """fsutil.read_bounded; an oversized file is a ValueError here (the facts name the error's type)."""
    try:
        return fsutil.read_bounded(path, limit)
    except fsutil.FileTooLarge as exc:
        raise ValueError(f"larger than {limit} bytes") from exc


def read_json_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Raw JSON (not the strict model): an audit must read a config the server would refuse."""
    if not path.exists():
        return None, None
    try:
        data = json.loads(_read_bounded(path, MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        return None, f"{type(exc).__name__}: {str(exc)[:150]}"[:200]
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


# --------------------------------------------------------------------------- certificates


def _names(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def _ext(cert: x509.Certificate, cls: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def cert_info(name: str, path: str, cert: x509.Certificate, ca: x509.Certificate | None,
              also_trusted: tuple[x509.Certificate, ...] = ()) -> CertInfo:
    """Facts about one certificate (and whether ``ca`` -- or, during a CA rotation, another CA of the
    trust bundle in ``also_trusted`` -- signed it)."""
    pub = cert.public_key()
    key_type, bits, curve = "other", None, None
    if isinstance(pub, ec.EllipticCurvePublicKey):
        key_type, bits, curve = "ec", pub.curve.key_size, pub.curve.name
    elif isinstance(pub, rsa.RSAPublicKey):
        key_type, bits = "rsa", pub.key_size
    elif isinstance(pub, ed25519.Ed25519PublicKey):
        key_type = "ed25519"
    elif isinstance(pub, ed448.Ed448PublicKey):
        key_type = "ed448"
    elif isinstance(pub, dsa.DSAPublicKey):
        key_type, bits = "dsa", pub.key_size
    sans: list[str] = []
    san = _ext(cert, x509.SubjectAlternativeName)
    if san is not None:
        sans += [f"dns:{v.lower()}" for v in san.get_values_for_type(x509.DNSName)]
        sans += [f"ip:{v}" for v in san.get_values_for_type(x509.IPAddress)]
    bc = _ext(cert, x509.BasicConstraints)
    ku = _ext(cert, x509.KeyUsage)
    eku = _ext(cert, x509.ExtendedKeyUsage)
    signed: bool | None = None
    if ca is not None:
        signed = False
        for issuer in (ca, *also_trusted):
            try:
                cert.verify_directly_issued_by(issuer)
                signed = True
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
    cn = _names(cert.subject, NameOID.COMMON_NAME)
    return CertInfo(
        name=name, path=path,
        subject_cn=cn[0] if cn else None,
        subject_o=tuple(_names(cert.subject, NameOID.ORGANIZATION_NAME)),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        key_type=key_type, key_bits=bits, curve=curve, sans=tuple(sans),
        is_ca=bool(bc and bc.ca), key_cert_sign=bool(ku and ku.key_cert_sign),
        eku=tuple(o.dotted_string for o in eku) if eku is not None else (),
        signed_by_ca=signed,
    )


def load_cert(path: Path) -> tuple[x509.Certificate | None, str | None]:
    if not path.exists():
        return None, "missing"
    try:
        return x509.load_pem_x509_certificate(_read_bounded(path, MAX_PEM_BYTES)), None
    except (OSError, ValueError) as exc:
        return None, f"unreadable certificate: {type(exc).__name__}"


def load_trust_bundle(path: Path) -> tuple[x509.Certificate, ...]:
    """Every CA in ``ca.crt`` after the first (a CA rotation's overlap bundle), or ()."""
    try:
        certs = x509.load_pem_x509_certificates(_read_bounded(path, MAX_PEM_BYTES))
    except (OSError, ValueError):
        return ()
    return tuple(certs[1:])


def _cert_facts(name: str, path: Path, ca: x509.Certificate | None,
                also_trusted: tuple[x509.Certificate, ...] = ()) -> CertInfo:
    cert, err = load_cert(path)
    if cert is None:
        return CertInfo(name=name, path=str(path), error=err)
    return cert_info(name, str(path), cert, ca, also_trusted)


def _crl_facts(path: Path, ca: x509.Certificate | None) -> CrlInfo:
    if not path.exists():
        return CrlInfo(path=str(path), exists=False)
    try:
        crl = x509.load_pem_x509_crl(_read_bounded(path, MAX_PEM_BYTES))
    except (OSError, ValueError) as exc:
        return CrlInfo(path=str(path), exists=True, error=type(exc).__name__)
    signed = None
    if ca is not None:
        try:
            signed = bool(crl.is_signature_valid(ca.public_key()))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            signed = False
    return CrlInfo(path=str(path), exists=True, signed_by_ca=signed,
                   next_update=crl.next_update_utc, revoked=len(crl))


# --------------------------------------------------------------------------- tokens


def _as_epoch(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        # Integer epochs in s, ms, us or ns (kedge's CloudState stores microseconds).
        for threshold, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
            if abs(v) >= threshold:
                return v / scale
        return v
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return t.timestamp()
    return None


def _pick(cols: list[str], *names: str) -> str | None:
    return next((n for n in names if n in cols), None)


def read_tokens(db: Path) -> TokenFacts:
    """Rows of ``tokens`` read through a read-only SQLite URI (never creates or locks for write)."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        return TokenFacts(db_path=str(db), error=type(exc).__name__)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(tokens)").fetchall()]
        if not cols:
            return TokenFacts(db_path=str(db))
        c_id = _pick(cols, "token_id", "id", "name")
        c_hash = _pick(cols, "secret_hash", "hash", "secret")
        c_created = _pick(cols, "created_at", "created", "issued_at")
        c_expires = _pick(cols, "expires_at", "expires", "expiry")
        c_used = _pick(cols, "used_at", "used", "consumed_at", "consumed")
        if c_hash is None:
            return TokenFacts(db_path=str(db), error="tokens table has no secret column")
        wanted = [c_id, c_hash, c_created, c_expires, c_used]
        # Column names come from PRAGMA on the table itself and are checked against
        # fixed lists above, so quoting them is safe.
        select = ", ".join(f'"{c}"' if c else "NULL" for c in wanted)
        query = f"SELECT {select} FROM tokens LIMIT ?"  # nosec B608 - column names from a fixed list
        rows = conn.execute(query, (MAX_TOKEN_ROWS + 1,)).fetchall()
    except sqlite3.Error as exc:
        return TokenFacts(db_path=str(db), error=type(exc).__name__)
    finally:
        conn.close()
    out = []
    for rid, secret, created, expires, used in rows[:MAX_TOKEN_ROWS]:
        out.append(TokenRow(
            token_id=str(rid)[:16] if rid is not None else "?",
            secret_hash=secret if isinstance(secret, str) else (None if secret is None else repr(type(secret))),
            created_at=_as_epoch(created), expires_at=_as_epoch(expires),
            used=None if c_used is None else bool(used),
        ))
    return TokenFacts(db_path=str(db), rows=tuple(out), truncated=len(rows) > MAX_TOKEN_ROWS)


def scan_plaintext_tokens(root: Path) -> tuple[PlaintextHit, ...]:
    """Look for whole bootstrap tokens in any file of the data dir (bounded walk)."""
    hits: list[PlaintextHit] = []
    budget = MAX_SCAN_FILES
    root_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if len(Path(dirpath).parts) - root_depth >= MAX_SCAN_DEPTH:
            dirnames[:] = []
        for fn in sorted(filenames):
            if budget <= 0:
                return tuple(hits)
            budget -= 1
            p = Path(dirpath) / fn
            try:
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
                with open(p, "rb") as fh:
                    data = fh.read(MAX_SCAN_BYTES)
            except OSError:
                continue
            for m in _TOKEN_BYTES.finditer(data):
                hits.append(PlaintextHit(path=str(p), line=data.count(b"\n", 0, m.start()) + 1,
                                         kind="bootstrap-token"))
                break
    return tuple(hits)


# --------------------------------------------------------------------------- RBAC manifests


def _rules(doc: dict[str, Any]) -> tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...]:
    out = []
    for rule in doc.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        as_t = lambda v: tuple(str(x) for x in v) if isinstance(v, list) else ()  # noqa: E731
        out.append((as_t(rule.get("apiGroups")), as_t(rule.get("resources")), as_t(rule.get("verbs"))))
    return tuple(out)


def _collect(doc: Any, path: str, bindings: list[Binding], roles: list[RoleRules]) -> None:
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List")):
        for item in (doc.get("items") or [])[:MAX_MANIFEST_DOCS]:
            _collect(item, path, bindings, roles)
        return
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name, ns = str(meta.get("name", "")), meta.get("namespace")
    if kind in ("ClusterRoleBinding", "RoleBinding"):
        ref = doc.get("roleRef") if isinstance(doc.get("roleRef"), dict) else {}
        subjects = tuple((str(s.get("kind", "")), str(s.get("name", "")))
                         for s in (doc.get("subjects") or []) if isinstance(s, dict))
        bindings.append(Binding(kind=kind, name=name, namespace=ns, role_kind=str(ref.get("kind", "")),
                                role_name=str(ref.get("name", "")), subjects=subjects, path=path))
    elif kind in ("ClusterRole", "Role"):
        roles.append(RoleRules(kind=kind, name=name, namespace=ns, rules=_rules(doc), path=path))


_RBAC_RESOURCES = tuple(f"rbac.authorization.k8s.io/{r}"
                        for r in ("clusterrolebindings", "rolebindings", "clusterroles", "roles"))


def _read_api_store(db: Path, bindings: list[Binding], roles: list[RoleRules], errors: list[str]) -> None:
    """RBAC objects from the embedded API server's store (``DIR/api.db``), read-only."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        errors.append(f"{db}: {type(exc).__name__}")
        return
    try:
        marks = ",".join("?" * len(_RBAC_RESOURCES))
        query = f"SELECT data FROM objects WHERE resource IN ({marks}) LIMIT ?"  # nosec B608 - only placeholders
        rows = conn.execute(query, (*_RBAC_RESOURCES, MAX_MANIFEST_DOCS)).fetchall()
    except sqlite3.Error as exc:
        errors.append(f"{db}: {type(exc).__name__}")
        return
    finally:
        conn.close()
    for (data,) in rows:
        try:
            doc = json.loads(data)
        except (TypeError, ValueError):
            errors.append(f"{db}: undecodable object")
            continue
        _collect(doc, str(db), bindings, roles)


def read_secrets_at_rest(root: Path) -> SecretsAtRest | None:
    """Count sealed and plaintext Secret rows (current objects and the watch log) in ``DIR/api.db``."""
    db = root / "api.db"
    if not db.is_file():
        return None
    config = stat_path(root / "pki" / "encryption.json")
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        return SecretsAtRest(db_path=str(db), config=config, error=type(exc).__name__)
    try:
        row = conn.execute(
            "SELECT coalesce(sum(data LIKE 'k8s:enc:aesgcm:v1:%'), 0), coalesce(sum(data NOT LIKE 'k8s:enc:aesgcm:v1:%'), 0) "
            "FROM (SELECT data FROM objects WHERE resource='/secrets' UNION ALL "
            "SELECT data FROM events WHERE resource='/secrets')").fetchone()
    except sqlite3.Error as exc:
        return SecretsAtRest(db_path=str(db), config=config, error=type(exc).__name__)
    finally:
        conn.close()
    return SecretsAtRest(db_path=str(db), config=config, sealed=int(row[0]), plain=int(row[1]))


def read_rbac(root: Path) -> RbacFacts | None:
    """RBAC objects from the API server store and/or ``DIR/manifests/``; None if neither exists."""
    mdir = root / "manifests"
    api_db = root / "api.db"
    if not mdir.is_dir() and not api_db.is_file():
        return None
    bindings: list[Binding] = []
    roles: list[RoleRules] = []
    errors: list[str] = []
    sources = []
    if api_db.is_file():
        sources.append(str(api_db))
        _read_api_store(api_db, bindings, roles, errors)
    if not mdir.is_dir():
        return RbacFacts(source=", ".join(sources), bindings=tuple(bindings), roles=tuple(roles),
                         errors=tuple(errors))
    sources.append(str(mdir))
    files = sorted(p for p in mdir.iterdir() if p.suffix in (".yaml", ".yml", ".json"))[:MAX_MANIFEST_FILES]
    for p in files:
        try:
            docs = list(yaml.safe_load_all(_read_bounded(p, MAX_JSON_BYTES)))[:MAX_MANIFEST_DOCS]
        except (OSError, ValueError, yaml.YAMLError) as exc:
            errors.append(f"{p}: {type(exc).__name__}")
            continue
        for doc in docs:
            _collect(doc, str(p), bindings, roles)
    return RbacFacts(source=", ".join(sources), bindings=tuple(bindings), roles=tuple(roles), errors=tuple(errors))


# --------------------------------------------------------------------------- mosquitto


def _truthy(v: str) -> bool:
    return v.strip().lower() in ("true", "1", "yes", "on")


def parse_mosquitto_conf(text: str, conf_path: str) -> MqttFacts:
    """Listener-level view of a mosquitto.conf (the subset that matters for exposure)."""
    listeners: list[dict[str, Any]] = []
    default: dict[str, Any] = {"port": None, "address": None, "socket_path": None, "certfile": False,
                               "keyfile": False, "require_certificate": False, "allow_anonymous": None,
                               "acl_file": None, "password_file": None, "explicit": False}
    glob: dict[str, Any] = {"allow_anonymous": None, "acl_file": None}
    per_listener = False
    current = default
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        key, args = parts[0].lower(), parts[1:]
        if key == "per_listener_settings" and args:
            per_listener = _truthy(args[0])
        elif key == "listener" and args:
            current = dict(default, port=None, address=None, explicit=True, certfile=False, keyfile=False,
                           require_certificate=False, allow_anonymous=None, acl_file=None)
            try:
                current["port"] = int(args[0])
            except ValueError:
                current["port"] = None
            if len(args) > 1:
                addr = args[1].strip()
                if current["port"] == 0 or addr.startswith("/"):
                    current["socket_path"] = addr
                else:
                    current["address"] = addr
            listeners.append(current)
        elif key == "port" and args:
            try:
                default["port"] = int(args[0])
            except ValueError:
                default["port"] = None
            default["explicit"] = True
        elif key == "bind_address" and args:
            default["address"] = args[0]
            default["explicit"] = True
        elif key in ("certfile", "keyfile") and args:
            current[key] = True
        elif key == "require_certificate" and args:
            current["require_certificate"] = _truthy(args[0])
        elif key in ("allow_anonymous", "acl_file", "password_file") and args:
            value: Any = _truthy(args[0]) if key == "allow_anonymous" else " ".join(args)
            if key != "password_file":
                glob[key] = value
            current[key] = value
    if default["explicit"]:
        listeners.insert(0, default)
    if not listeners:
        # mosquitto 2.x with no listener configured listens on loopback 1883 without TLS.
        listeners.append(dict(default, port=1883, address="127.0.0.1"))
    out = tuple(MqttListener(
        port=li["port"] if li["port"] is not None else (1883 if li is default else None),
        address=li["address"], socket_path=li["socket_path"],
        tls=bool(li["certfile"] and li["keyfile"]), require_certificate=bool(li["require_certificate"]),
        allow_anonymous=li["allow_anonymous"], acl_file=li["acl_file"], password_file=li["password_file"],
    ) for li in listeners)
    return MqttFacts(conf_path=conf_path, listeners=out, global_allow_anonymous=glob["allow_anonymous"],
                     global_acl_file=glob["acl_file"], per_listener_settings=per_listener)


def read_mqtt(edge_root: Path) -> MqttFacts | None:
    conf = edge_root / "mosquitto" / "mosquitto.conf"
    if not conf.exists():
        return None
    try:
        text = _read_bounded(conf, MAX_MQTT_CONF_BYTES).decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        return MqttFacts(conf_path=str(conf), error=type(exc).__name__)
    return parse_mosquitto_conf(text, str(conf))


# --------------------------------------------------------------------------- directories


def gather_cloud(root: str | Path) -> CloudFacts:
    r = Path(root)
    pki = r / "pki"
    root_stat = stat_path(r)
    ca_cert, ca_err = load_cert(pki / "ca.crt")
    ca_info = (cert_info("ca.crt", str(pki / "ca.crt"), ca_cert, ca_cert) if ca_cert is not None
               else (CertInfo(name="ca.crt", path=str(pki / "ca.crt"), error=ca_err)
                     if (pki / "ca.crt").exists() else None))
    bundle = load_trust_bundle(pki / "ca.crt")
    certs = tuple(_cert_facts(n, pki / n, ca_cert, bundle) for n in _CLOUD_CERTS if (pki / n).exists())
    keys = tuple(stat_path(p) for p in sorted(pki.glob("*.key"))) if pki.is_dir() else ()
    config, config_error = read_json_config(r / "config.json")
    audit_log = None
    log_name = (config or {}).get("audit_log", "audit.log")
    if isinstance(log_name, str) and log_name.strip():
        lp = Path(log_name)
        audit_log = stat_path(lp if lp.is_absolute() else r / lp)
    state_db = r / "state.db"
    return CloudFacts(
        root=str(r), service_uid=root_stat.uid,
        dirs=(root_stat, stat_path(pki)),
        key_files=keys,
        kubeconfig=stat_path(r / "admin.kubeconfig"),
        state_db=stat_path(state_db),
        api_db=stat_path(r / "api.db"),
        audit_log=audit_log,
        extra_logs=(stat_path(r / "apiserver-audit.log"),),
        config=config, config_error=config_error, config_path=str(r / "config.json"),
        ca=ca_info, certs=certs,
        crl=_crl_facts(pki / "crl.pem", ca_cert),
        tokens=read_tokens(state_db) if state_db.exists() else None,
        plaintext_hits=scan_plaintext_tokens(r) if r.is_dir() else (),
        rbac=read_rbac(r),
        secrets_at_rest=read_secrets_at_rest(r),
    )


def gather_edge(root: str | Path) -> EdgeFacts:
    r = Path(root)
    pki = r / "pki"
    root_stat = stat_path(r)
    ca_cert, _ = load_cert(pki / "ca.crt")
    node_cert = (_cert_facts("node.crt", pki / "node.crt", ca_cert, load_trust_bundle(pki / "ca.crt"))
                 if (pki / "node.crt").exists() else None)
    if node_cert is not None and ca_cert is None:
        node_cert = CertInfo(**{**node_cert.__dict__, "signed_by_ca": None})
    config, config_error = read_json_config(r / "config.json")
    ca_info = cert_info("ca.crt", str(pki / "ca.crt"), ca_cert, ca_cert) if ca_cert is not None else None
    return EdgeFacts(
        root=str(r), service_uid=root_stat.uid,
        dirs=(root_stat, stat_path(pki)),
        node_key=stat_path(pki / "node.key"),
        edge_db=stat_path(r / "edge.db"),
        edge_key=stat_path(r / "edge.key"),
        config=config, config_error=config_error, config_path=str(r / "config.json"),
        node_cert=node_cert, ca=ca_info,
        mqtt=read_mqtt(r),
        **_mqtt_credentials(r, config),
    )


def _mqtt_credentials(r: Path, config: Any) -> dict[str, Any]:
    """The MQTT keys and certificates edgecore uses (see EdgeFacts.mqtt_keys)."""
    ext = config.get("mqtt_broker") if isinstance(config, dict) else None
    if isinstance(ext, dict) and all(isinstance(ext.get(k), str) for k in ("ca", "cert", "key")):
        ca_cert, _ = load_cert(Path(ext["ca"]))
        return {"mqtt_external": True, "mqtt_keys": (stat_path(ext["key"]),),
                "mqtt_certs": (_cert_facts("mqtt client certificate", Path(ext["cert"]), ca_cert),)}
    pki = r / "pki"
    ca_cert, _ = load_cert(pki / "mqtt-ca.crt")
    keys = tuple(stat_path(pki / n) for n in ("mqtt-broker.key", "mqtt-client.key") if (pki / n).exists())
    certs = tuple(_cert_facts(n, pki / n, ca_cert) for n in ("mqtt-broker.crt", "mqtt-client.crt")
                  if (pki / n).exists())
    return {"mqtt_keys": keys, "mqtt_certs": certs}


# --------------------------------------------------------------------------- systemd units


def read_systemd_unit(name: str, dirs: Sequence[str] = SYSTEMD_DIRS, *,
                      analyze: bool = True) -> SystemdUnitFacts | None:
    """The unit ``name`` from the first of ``dirs`` that has it, with its ``name.d/*.conf``
    drop-ins from all of them (a drop-in name in an earlier dir hides the same name in a later
    one; they apply sorted by file name), scored by ``systemd-analyze security`` when that is
    installed. None when no dir has the unit."""
    unit = next((Path(d) / name for d in dirs if (Path(d) / name).is_file()), None)
    if unit is None:
        return None
    dropins: dict[str, Path] = {}
    for d in dirs:
        ddir = Path(d) / f"{name}.d"
        if ddir.is_dir():
            for p in sorted(ddir.glob("*.conf"))[:MAX_DROPINS]:
                dropins.setdefault(p.name, p)
    files = []
    for p in [unit, *(dropins[n] for n in sorted(dropins))]:
        try:
            files.append((str(p), _read_bounded(p, MAX_UNIT_BYTES).decode("utf-8", "replace")))
        except (OSError, ValueError) as exc:
            return SystemdUnitFacts(path=str(unit), error=f"{p}: {type(exc).__name__}: {str(exc)[:100]}")
    exposure, analyze_error = None, None
    if analyze:
        from kedge.systemd import analyze as sa

        try:
            exposure = sa.security_exposure(unit)
        except sa.AnalyzeError as exc:
            analyze_error = str(exc)[:200]
    return SystemdUnitFacts(path=str(unit), files=tuple(files), exposure=exposure, analyze_error=analyze_error)
