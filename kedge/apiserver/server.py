"""Run the embedded API server from a cloud data directory.

``serve_apiserver(data_dir)`` is the entry point for both ``kedge apiserver`` and an
embedding cloudcore: it opens ``DIR/api.db``, serves HTTPS with ``pki/hub.crt`` on the
configured ``api_port`` (0 = a free port), publishes the address in
``DIR/endpoints.json`` and rewrites ``DIR/admin.kubeconfig`` to it, and runs until
cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kedge._internal.net import url_host as _url_host
from kedge import tls
from kedge._internal import fsutil
from kedge.apiserver import podsecurity
from kedge.apiserver.api import API
from kedge.apiserver.http import ApiServer, RevocationList
from kedge.cloud.config import ENCRYPTION_CONFIG, CloudDir
from kedge.errors import StateError
from kedge.pki import crl as crl_mod
from kedge.pki.crl import CrlKeeper
from kedge.store.sqlite import Store

log = logging.getLogger(__name__)

API_DB = "api.db"
API_AUDIT_LOG = "apiserver-audit.log"
DEFAULT_WATCH_WINDOW = 10_000  # events kept for watches from an old resourceVersion


SA_KEY = "sa.key"


def load_or_create_sa_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The service-account token signing key (ECDSA P-256), created 0600 on first start."""
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            fsutil.create_exclusive(path, pem)
        except StateError:
            pass  # created concurrently; load the winner's key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise StateError(f"{path} is not an EC private key", code="bad_key")
    return loaded



def open_revocations(d: CloudDir) -> tuple[RevocationList, CrlKeeper]:
    """The cluster CA's CRL as the API server checks it, and the keeper that re-issues it
    before its nextUpdate (from ``state.db``). Refuses to go on -- ``StateError`` with the
    CRL's code -- if the CRL is missing or cannot be trusted: without it a revoked
    certificate would be accepted. A CRL that merely expired while the cloud was down is
    re-issued here (the cloud is its issuer)."""
    from kedge.cloud.state import CloudState

    if not d.crl.exists():  # never created here: a missing CRL is lost revocations, not "none"
        raise StateError(f"{d.crl} is missing: refusing to serve without a revocation list, which would "
                         f"accept revoked certificates (restore it from a backup of {d.pki})", code="crl_missing")
    state = CloudState(d.state_db)
    keeper = CrlKeeper(d.crl, ca_key_path=d.ca_key, ca_cert_path=d.ca_crt,
                       revoked=lambda now: state.revoked_serials(now=now), generation=state.generation,
                       close=state.close)
    try:
        keeper.refresh(allow_expired=True)
    except crl_mod.CrlError as exc:
        keeper.close()
        raise StateError(f"{d.crl} cannot be trusted ({exc.code}): refusing to serve", code=exc.code) from exc
    except BaseException:
        keeper.close()
        raise
    return RevocationList(d.crl, d.ca_crt), keeper


async def start_apiserver(data_dir: str | Path, *, port: int | None = None,
                          watch_window: int = DEFAULT_WATCH_WINDOW) -> tuple[ApiServer, Store, str]:
    """Open the store and start listening; returns ``(server, store, url)``. Caller stops both."""
    d = CloudDir(data_dir)
    cfg = d.load_config()
    limits = cfg.build_limits()
    revocations, keeper = await asyncio.to_thread(open_revocations, d)
    # Follows `kedge ca rotate|finish`: the trust bundle and the re-certified serving certificate.
    ctx = tls.ReloadingServerContext(d.hub_crt, d.hub_key, d.ca_crt, client_cert="optional",
                                     allow_tls12=cfg.allow_tls12).context
    from kedge.store.sealing import Sealer

    try:
        store = Store(d.root / API_DB, window=watch_window, sealer=Sealer.load_or_create(d.pki / ENCRYPTION_CONFIG))
    except BaseException:
        keeper.close()
        raise
    try:
        api = API(store, node_authorization=True, sa_key=load_or_create_sa_key(d.pki / SA_KEY))
        api.pod_security_defaults = podsecurity.default_policy(cfg.pod_security)  # `kedge init --pod-security`
        store.attach(asyncio.get_running_loop())  # writes are published on this loop as they commit
        server = ApiServer(api, ctx, host=cfg.bind_address, port=cfg.api_port if port is None else port,
                           limits=limits, revocations=revocations, audit_path=d.root / API_AUDIT_LOG,
                           crl_keeper=keeper)
        bound = await server.start()
    except BaseException:
        keeper.close()
        store.close()
        raise
    url = f"https://{_url_host(cfg.advertise_addresses[0])}:{bound}"
    from kedge.cloud.init import write_kubeconfig

    if d.admin_key.exists():
        write_kubeconfig(d, url)  # before publishing: readers of endpoints.json may use it at once
    fsutil.update_json(d.endpoints, {"api": url})
    log.info("API server listening on %s", url)
    return server, store, url


async def serve_apiserver(data_dir: str | Path, *, port: int | None = None,
                          ready: asyncio.Event | None = None, watch_window: int = DEFAULT_WATCH_WINDOW) -> None:
    """Serve until cancelled; sets ``ready`` once listening and published."""
    server, store, _ = await start_apiserver(data_dir, port=port, watch_window=watch_window)
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await server.stop()
        store.close()
