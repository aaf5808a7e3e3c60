"""devicetwin (edge): Device twins between the cloud (tunnel) and mappers (MQTT over TLS).

``run_devicetwin(core)`` is an edgecore component. It

1. makes the broker's server key and edgecore's MQTT client key on the edge (in a child,
   :mod:`kedge.edge.mqttkeys`) and has the cloud's device CA certify them over the
   node's authenticated tunnel (CSRs; cached in ``EDGEDIR/pki/mqtt-*``, all 0600) -- so
   device credentials from ``kedge device credentials`` (cloud side) verify this broker
   and are verified by it, and no private key crosses the tunnel. The device CA's CRL comes
   with them (``mqtt-crl.pem``, mosquitto's ``crlfile``) and is refreshed over the tunnel
   (``devicecrl``) every ``limits.device_crl_poll_s``: a device revoked with ``kedge device
   revoke`` is cut off and refused by this broker within that interval (:mod:`.crl`);
2. starts mosquitto (:mod:`kedge.edge.broker`) and writes ``{"mqtt": "mqtts://127.0.0.1:P"}``
   into ``EDGEDIR/endpoints.json``; without mosquitto it logs an error and returns
   (device management off, the rest of edgecore keeps running). With ``mqtt_broker`` in
   the edge config it uses that operator's broker instead -- only after checking it live
   (:mod:`kedge.edge.brokercheck`), and skipping 1. and the broker's ACL;
3. follows Device/DeviceModel objects in the edge store: desired values go into the
   twin table (``EDGEDIR/twins.db``) and changes are published to
   ``$hw/events/device/{ns}/{name}/twin/update/delta``;
4. takes mapper reports (``twin/update``, ``state/update``) and ``twin/get`` requests,
   validates them (:mod:`.model`), records reports durably and uploads them in batches
   (``devicestatus``) whenever the tunnel is up; unacked reports survive offline
   periods and restarts.

Threads: paho's network thread only enqueues; one worker thread applies batches to the
engine (SQLite); the asyncio side only uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from typing import Any

from kedge._internal import fsutil
from kedge.edge.broker import Broker, BrokerUnavailable, ExternalBroker, find_mosquitto, mqtt_client_id
from kedge.edge.devicetwin import crl
from kedge.edge.devicetwin.engine import TwinEngine
from kedge.edge.devicetwin.table import TwinTable
from kedge.errors import KedgeError, PeerError
from kedge.protocol import message as m

log = logging.getLogger(__name__)

MAX_BACKLOG = 20_000  # MQTT messages waiting for the worker; beyond this they are dropped and counted
WORKER_BATCH = 1_000
UPLOAD_BATCH_DEVICES = 200
UPLOAD_PIPELINE = 2  # batches in flight at once
CRL_FILE = "mqtt-crl.pem"
# An edge missing any of these (one installed before the CRL came with the bundle) fetches a new bundle.
CERT_FILES = ("mqtt-ca.crt", "mqtt-broker.crt", "mqtt-broker.key", "mqtt-client.crt", "mqtt-client.key", CRL_FILE)
CRL_POLL_MIN_S = 1.0
CRL_POLL_MAX_S = 3600.0
CRL_RETRY_S = 30.0  # after a failed poll, at most this long until the next one
RENEW_BEFORE = dt.timedelta(days=7)
RENEW_CHECK_MAX_S = 3600.0  # look again at least this often (the clock may jump)
BROKER_CHECK_TIMEOUT_S = 120


def _now_ms() -> int:
    return int(time.time() * 1000)


def _renew_in(pki_dir) -> float:
    """Seconds until the MQTT certificates are due for renewal (<= 0: now; missing or
    unreadable files are due). Due at ``notAfter - min(RENEW_BEFORE, lifetime / 3)`` of the
    certificate that expires first, so short-lived certificates renew in time too."""
    from kedge.tls import load_cert_validity  # expiry only: an idle edge does not load cryptography

    if not all((pki_dir / f).exists() for f in CERT_FILES):
        return -1.0
    due = []
    try:
        for name in ("mqtt-broker.crt", "mqtt-client.crt"):
            v = load_cert_validity(pki_dir / name)
            lifetime = v.not_valid_after_utc - v.not_valid_before_utc
            due.append(v.not_valid_after_utc - min(RENEW_BEFORE, lifetime / 3))
    except KedgeError:
        return -1.0
    return (min(due) - dt.datetime.now(dt.timezone.utc)).total_seconds()


def _certs_usable(pki_dir) -> bool:
    return _renew_in(pki_dir) > 0


_CERT_PARTS = (("ca", "mqtt-ca.crt"), ("serverCert", "mqtt-broker.crt"), ("clientCert", "mqtt-client.crt"))
_KEY_FILES = ("mqtt-broker.key", "mqtt-client.key")  # staged as <name>.next by kedge.edge.mqttkeys
MQTT_KEYS_TIMEOUT_S = 120


# OpenSSL's verify results (X509_V_ERR_*) when our own pair is checked against a CRL.
_CRL_VERIFY_CODES = {3: "crl_not_from_device_ca", 8: "crl_bad_signature", 11: "crl_not_yet_valid",
                     12: "crl_expired", 23: "crl_revokes_this_edge"}


def _check_with_openssl(files: dict[str, Any]) -> None:
    """OpenSSL (the library mosquitto uses) loads the broker's and edgecore's TLS identities --
    parsing every PEM and checking each key matches its certificate -- and runs an in-memory
    handshake between them with the CRL checked on both sides, as mosquitto checks devices.
    It completes only if each certificate chains to the CA, the CRL is signed by that CA and
    current, and it revokes neither of our certificates. ``files``: paths by installed name."""
    import ssl

    from kedge import tls

    try:
        server = tls.server_context(files["mqtt-broker.crt"], files["mqtt-broker.key"], files["mqtt-ca.crt"])
        client = tls.client_context(files["mqtt-ca.crt"], files["mqtt-client.crt"], files["mqtt-client.key"])
        for ctx in (server, client):
            ctx.load_verify_locations(cafile=str(files[CRL_FILE]))  # only a CRL: crl.pem_to_der checked
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise PeerError("certificate bundle does not load", code="bad_bundle") from exc
    bios = [ssl.MemoryBIO() for _ in range(4)]
    ends = [server.wrap_bio(bios[0], bios[1], server_side=True),
            client.wrap_bio(bios[2], bios[3], server_hostname=Broker.host)]
    done = [False, False]
    try:
        for _ in range(8):  # a TLS 1.3 handshake needs three flights
            for i in (1, 0):
                if not done[i]:
                    with contextlib.suppress(ssl.SSLWantReadError):
                        ends[i].do_handshake()
                        done[i] = True
            bios[0].write(bios[3].read())
            bios[2].write(bios[1].read())
            if all(done):
                return
    except ssl.SSLCertVerificationError as exc:
        raise PeerError(f"certificate bundle does not verify: {exc.verify_message}",
                        code=_CRL_VERIFY_CODES.get(exc.verify_code, "bad_bundle")) from exc
    except ssl.SSLError as exc:
        raise PeerError("certificate bundle does not verify", code="bad_bundle") from exc
    raise PeerError("certificate bundle check did not complete", code="bad_bundle")


def _crl_from_cloud(value: Any, limits) -> tuple[bytes, crl.CrlInfo]:
    """The CRL PEM of a cloud answer, shape-checked (one X509 CRL block, within the bound), and
    what it says. Its signature is checked by :func:`_check_with_openssl` before it is installed."""
    if not isinstance(value, str) or not value.isascii():
        raise crl.BadCrl("no CRL in the answer", code="crl_missing")
    data = value.encode()
    return data, crl.parse_crl_pem(data, max_bytes=limits.max_device_crl_bytes)


def _install_bundle(pki_dir, certs: dict[str, str], limits=None) -> None:
    """Stage the issued certificates and the device CA's CRL (0600) beside the staged keys,
    have OpenSSL check them together (:func:`_check_with_openssl`), then move all of them
    into place. A bad bundle is refused (``bad_bundle``, ``bad_crl``, ``crl_*``) and changes
    nothing; the staged files are gone either way. (OpenSSL rather than ``cryptography``
    keeps an edge's first start as small as its idle.)"""
    from kedge.limits import DEFAULT

    staged = {name: pki_dir / f"{name}.next" for _, name in _CERT_PARTS}
    staged.update({name: pki_dir / f"{name}.next" for name in _KEY_FILES})
    staged[CRL_FILE] = pki_dir / f"{CRL_FILE}.next"
    try:
        crl_pem, _ = _crl_from_cloud(certs.get("crl"), limits or DEFAULT)
        for key, name in _CERT_PARTS:
            fsutil.write_private(staged[name], certs[key].encode())
        fsutil.write_private(staged[CRL_FILE], crl_pem)
        _check_with_openssl(staged)
        for name, path in staged.items():
            path.replace(pki_dir / name)
        fsutil.fsync_dir(pki_dir)
    finally:
        for path in staged.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


async def _stage_keys(pki_dir, node: str) -> dict[str, str]:
    """Run ``python -m kedge.edge.mqttkeys`` (keys made and staged on the edge); its CSRs."""
    from kedge.edge import child, mqttkeys
    from kedge.errors import LocalError

    try:
        out, rc = await child.run_module("kedge.edge.mqttkeys", str(pki_dir), node,
                                         timeout_s=MQTT_KEYS_TIMEOUT_S, code="mqtt_keys_failed")
    except TimeoutError:
        raise LocalError("MQTT key generation did not finish in time", code="mqtt_keys_failed") from None
    return mqttkeys.parse_result(out, rc)


def _installed_crl(pki_dir, limits) -> crl.CrlInfo | None:
    """The CRL mosquitto has (None if missing or unreadable: any current one replaces it)."""
    try:
        return crl.parse_crl_pem((pki_dir / CRL_FILE).read_bytes(), max_bytes=limits.max_device_crl_bytes)
    except (OSError, crl.BadCrl):
        return None


def _install_crl(pki_dir, crl_pem: bytes) -> None:
    """Stage ``crl_pem`` (0600), have OpenSSL check it with the installed certificates and
    keys, move it into place. Refused (and nothing changed) if the check fails."""
    staged = pki_dir / f"{CRL_FILE}.next"
    try:
        fsutil.write_private(staged, crl_pem)
        files: dict[str, Any] = {name: pki_dir / name for name in CERT_FILES}
        files[CRL_FILE] = staged
        _check_with_openssl(files)
        staged.replace(pki_dir / CRL_FILE)
        fsutil.fsync_dir(pki_dir)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


async def _until_valid(info: crl.CrlInfo) -> None:
    """Wait until ``info`` is valid by our clock (a CRL issued a moment ahead of it, within
    crl.MAX_CLOCK_SKEW); mosquitto would refuse every client before then."""
    wait = crl.check_current(info, now=dt.datetime.now(dt.timezone.utc))
    if wait > 0:
        await asyncio.sleep(wait + 1.0)  # CRL times have one-second resolution


async def ensure_certs(core) -> None:
    """Unless usable ones are on disk: make the MQTT keys here, have the cloud's device CA
    certify them (CSRs over the tunnel), install keys and certificates together."""
    pki_dir = core.dir.pki
    if await asyncio.to_thread(_certs_usable, pki_dir):
        return
    delay = 0.5
    while True:
        await core.hub.connected.wait()
        try:
            csrs = await _stage_keys(pki_dir, core.node)
            reply = await core.hub.request(core.hub.new_message(m.QUERY, f"default/devicecerts/{core.node}", csrs),
                                           timeout=30)
            if reply.route.operation == m.ERROR or not isinstance(reply.content, dict):
                raise PeerError("cloud refused to issue MQTT certificates", code="certs_refused")
            c = reply.content
            certs = {k: c.get(k) for k, _ in _CERT_PARTS}
            if not all(isinstance(v, str) and len(v) < 16384 for v in certs.values()):
                raise PeerError("malformed certificate bundle", code="bad_bundle")
            certs["crl"] = c.get("crl")
            await _until_valid(_crl_from_cloud(certs["crl"], core.hub.limits)[1])
            await asyncio.to_thread(_install_bundle, pki_dir, certs, core.hub.limits)
            log.info("MQTT keys made on this edge, certified by the cloud's device CA")
            return
        except (KedgeError, TimeoutError, ConnectionError) as exc:
            log.warning("could not get MQTT certificates: %s; retrying", getattr(exc, "code", type(exc).__name__))
            for name in _KEY_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (pki_dir / f"{name}.next").unlink()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


class DeviceTwinService:
    """Broker client + worker thread + uploader around one :class:`TwinEngine`."""

    def __init__(self, core, broker: Broker) -> None:
        import paho.mqtt.client as mqtt

        from kedge import tls

        self.core = core
        self.broker = broker
        self.loop = asyncio.get_running_loop()
        self.table = TwinTable(core.dir.root / "twins.db")
        self.engine = TwinEngine(self.table, core.node, self._publish, on_devices_changed=self._devices_changed)
        self.queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.backlog = 0
        self.dirty = asyncio.Event()
        self.stop_event = threading.Event()
        self.uploaded = 0
        self.inflight: set[tuple[str, str]] = set()
        pki_dir = core.dir.pki
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=mqtt_client_id(core.node),
                                  protocol=mqtt.MQTTv311, clean_session=True)
        ext = core.hub.cfg.mqtt_broker if not broker.managed else None
        if ext is not None:  # an operator's broker: edgecore's identity there is the operator's
            self.tls_context = tls.client_context(ext["ca"], ext["cert"], ext["key"])
        else:
            self.tls_context = tls.client_context(pki_dir / "mqtt-ca.crt", pki_dir / "mqtt-client.crt",
                                                  pki_dir / "mqtt-client.key")
        self.client.tls_set_context(self.tls_context)
        self.broker_lock = asyncio.Lock()  # one (re)start of mosquitto at a time
        self.pki_lock = asyncio.Lock()  # one writer of EDGEDIR/pki/mqtt-* at a time (renewal, CRL refresh)
        self.renewals = 0
        self.crl_updates = 0
        self.client.max_queued_messages_set(10_000)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._unsubscribe_store = core.store.on_change(self._store_changed)
        self.worker = threading.Thread(target=self._work, daemon=True, name="devicetwin")
        core.devicetwin = self  # edgecore's metrics read the counters above at scrape time

    # -- inputs (other threads) ------------------------------------------------------

    def _store_changed(self, key: str, obj: dict[str, Any] | None) -> None:
        if key.split("/")[1:2] in (["device"], ["devicemodel"]):
            self.queue.put(("obj", key, obj))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("edgecore MQTT client refused by the broker: %s", reason_code)
            return
        for action in ("twin/update", "state/update", "twin/get"):
            client.subscribe(f"$hw/events/device/+/+/{action}", qos=1)
        self.queue.put(("resend", None, None))

    def _on_message(self, client, userdata, msg) -> None:
        if self.backlog >= MAX_BACKLOG:
            self.engine.reject("overloaded", "broker")
            return
        self.backlog += 1
        self.queue.put(("mqtt", msg.topic, msg.payload))

    def _publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def _devices_changed(self, ids: set[tuple[str, str]]) -> None:
        self.broker.set_devices(ids)

    # -- worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        while not self.stop_event.is_set():
            try:
                first = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            items = [first]
            while len(items) < WORKER_BATCH:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._apply(items)
            except Exception:  # noqa: BLE001 - the worker must outlive any single bad batch
                log.exception("devicetwin batch failed")

    def _apply(self, items: list[tuple[str, Any, Any]]) -> None:
        now = _now_ms()
        mqtt_msgs: list[tuple[Any, Any]] = []
        for kind, a, b in items:
            if kind == "mqtt":
                mqtt_msgs.append((a, b))
                continue
            if mqtt_msgs:  # keep order between reports and desired changes
                self._handle_mqtt(mqtt_msgs, now)
                mqtt_msgs = []
            if kind == "obj":
                self.engine.object_changed(a, b, now)
            elif kind == "resend":
                for dev in list(self.engine.devices.values()):
                    self.engine._send_delta(dev, now)
        if mqtt_msgs:
            self._handle_mqtt(mqtt_msgs, now)

    def _handle_mqtt(self, msgs: list[tuple[Any, Any]], now: int) -> None:
        self.backlog -= len(msgs)
        before = self.engine.accepted
        self.engine.handle_batch(msgs, now)
        if self.engine.accepted != before:
            self.loop.call_soon_threadsafe(self.dirty.set)

    # -- upload (asyncio) ---------------------------------------------------------------

    async def _upload_once(self) -> bool:
        """Send one batch of unacked reports not already in flight; True if there may be more."""
        hub = self.core.hub
        batch = await asyncio.to_thread(self.table.pending, UPLOAD_BATCH_DEVICES, frozenset(self.inflight))
        if not batch:
            return False
        ids = {(e["namespace"], e["name"]) for e in batch}
        self.inflight |= ids
        try:
            body = [{k: v for k, v in e.items() if not k.startswith("_")} for e in batch]
            reply = await hub.request(hub.new_message(m.UPDATE, "default/devicestatus/batch", {"devices": body}),
                                      timeout=30)
            results = reply.content.get("results") if isinstance(reply.content, dict) else None
            if reply.route.operation == m.ERROR or not isinstance(results, list) or len(results) != len(batch):
                log.warning("cloud refused a device status batch: %s", str(reply.content)[:200])
                return False
            # The cloud's answer may be shorter than the batch (a peer): what it did not answer is retried.
            done = [e for e, r in zip(batch, results, strict=False)
                    if isinstance(r, dict) and (r.get("ok") or not r.get("retry"))]
            for r in results:
                if isinstance(r, dict) and not r.get("ok"):
                    log.info("cloud refused the report for %s/%s: %s", r.get("namespace"), r.get("name"),
                             r.get("code"))
            await asyncio.to_thread(self.table.mark_sent, done)
        finally:
            self.inflight -= ids
        self.uploaded += len(done)
        if len(done) == len(batch):
            self.dirty.set()  # rows reported while this batch was in flight
            return True
        return False

    async def _uploader(self) -> None:
        """One of UPLOAD_PIPELINE senders: while the cloud writes one batch, the next is on its way."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.dirty.wait()
            self.dirty.clear()
            if not self.core.hub.connected.is_set():
                continue
            await asyncio.sleep(0.02)  # coalesce a burst into one batch
            try:
                while await self._upload_once():
                    pass
            except (KedgeError, TimeoutError, ConnectionError) as exc:
                log.info("device status upload deferred: %s", getattr(exc, "code", type(exc).__name__))

    async def _restart_broker(self, *, stop_first: bool = False) -> None:
        """Start mosquitto again on the same port (mappers and our client reconnect): after it
        died, or (``stop_first``) to load renewed certificates."""
        async with self.broker_lock:
            if stop_first:
                await asyncio.to_thread(self.broker.stop)
            elif self.broker.alive():
                return
            else:
                log.error("mosquitto exited (see %s); restarting it", self.broker.dir / "mosquitto.log")
            try:
                url = await asyncio.to_thread(self.broker.start, set(self.engine.devices),
                                              preferred_port=self.broker.port)
                await asyncio.to_thread(fsutil.update_json, self.core.dir.endpoints, {"mqtt": url})
                if self.client.port != self.broker.port:
                    self.client.disconnect()
                    self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
            except BrokerUnavailable as exc:
                log.error("could not restart mosquitto: %s", exc)

    async def _renewer(self) -> None:
        """Renew the MQTT certificates before they expire (new keys made here, CSRs to the
        cloud), then restart mosquitto with them; edgecore's own client uses the new pair from
        its next connection on."""
        pki_dir = self.core.dir.pki
        while True:
            due = await asyncio.to_thread(_renew_in, pki_dir)
            if due > 0:
                await asyncio.sleep(min(max(due, 1.0), RENEW_CHECK_MAX_S))
                continue
            async with self.pki_lock:
                await ensure_certs(self.core)
            await asyncio.to_thread(self.tls_context.load_cert_chain, pki_dir / "mqtt-client.crt",
                                    pki_dir / "mqtt-client.key")
            await self._restart_broker(stop_first=True)
            self.renewals += 1
            log.info("MQTT certificates renewed (%d); mosquitto restarted with them", self.renewals)

    async def _refresh_crl(self) -> crl.Action:
        """Ask the cloud for the device CA's current CRL; install it if it is newer and changes
        something, and have mosquitto use it (:func:`crl.decide`: a newly revoked device means a
        restart, which also ends that device's live session)."""
        hub, pki_dir, limits = self.core.hub, self.core.dir.pki, self.core.hub.limits
        reply = await hub.request(hub.new_message(m.QUERY, f"default/devicecrl/{self.core.node}", None), timeout=30)
        if reply.route.operation == m.ERROR or not isinstance(reply.content, dict):
            raise PeerError("cloud refused the device CRL", code="crl_refused")
        data, new = _crl_from_cloud(reply.content.get("crl"), limits)
        await _until_valid(new)
        async with self.pki_lock:
            installed = await asyncio.to_thread(_installed_crl, pki_dir, limits)
            action = crl.decide(installed, new, now=dt.datetime.now(dt.timezone.utc))
            if action is crl.Action.KEEP:
                return action
            await asyncio.to_thread(_install_crl, pki_dir, data)
        self.crl_updates += 1
        if action is crl.Action.RESTART:
            await self._restart_broker(stop_first=True)
            log.info("device CRL updated (%d revoked); mosquitto restarted with it", len(new.revoked))
        else:
            self.broker.reload()
            log.info("device CRL refreshed (%d revoked); mosquitto reloads it", len(new.revoked))
        return action

    async def _crl_refresher(self) -> None:
        """Poll the device CRL: first at once (the one on disk may be as old as the certificates),
        then every ``limits.device_crl_poll_s`` (1 s .. 1 h) and well before it goes stale; while
        the tunnel is down, wait for it (and poll as soon as it is back); after a failure, retry
        with backoff up to CRL_RETRY_S."""
        hub = self.core.hub
        interval = min(max(float(hub.limits.device_crl_poll_s), CRL_POLL_MIN_S), CRL_POLL_MAX_S)
        delay, failures = 0.0, 0
        while True:
            await asyncio.sleep(delay)
            await hub.connected.wait()
            try:
                await self._refresh_crl()
                failures = 0
            except (KedgeError, TimeoutError, OSError) as exc:
                failures += 1
                log.warning("device CRL not refreshed: %s", getattr(exc, "code", type(exc).__name__))
            if failures:
                delay = min(interval, CRL_RETRY_S, 2.0 ** failures)
            else:
                installed = await asyncio.to_thread(_installed_crl, self.core.dir.pki, hub.limits)
                delay = crl.poll_delay(installed, interval_s=interval, now=dt.datetime.now(dt.timezone.utc))

    async def upload_loop(self) -> None:
        senders = [asyncio.create_task(self._uploader()) for _ in range(UPLOAD_PIPELINE)]
        if self.broker.managed:  # an operator's broker has the operator's certificates and CRL
            senders.append(asyncio.create_task(self._renewer()))
            senders.append(asyncio.create_task(self._crl_refresher()))
        try:
            while True:
                await asyncio.sleep(1.0)
                if not self.broker.alive():
                    await self._restart_broker()
        finally:
            for t in senders:
                t.cancel()
            await asyncio.gather(*senders, return_exceptions=True)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        store = self.core.store
        objs = []
        for kind in ("devicemodel", "device"):
            for obj in await asyncio.to_thread(store.list, kind):
                meta = obj.get("metadata") or {}
                objs.append((f"{meta.get('namespace', 'default')}/{kind}/{meta.get('name', '')}", obj))
        await asyncio.to_thread(self.engine.load, objs, _now_ms())
        self.worker.start()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        await self.upload_loop()

    def close(self) -> None:
        self.stop_event.set()
        self._unsubscribe_store()
        with contextlib.suppress(Exception):
            self.client.disconnect()
            self.client.loop_stop()
        if self.worker.is_alive():
            self.worker.join(5)
        self.table.close()


async def _wait_for_devices(core) -> None:
    """Return once the edge store holds at least one Device."""
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    def changed(key: str, obj: Any) -> None:
        if obj is not None and key.split("/")[1:2] == ["device"]:
            loop.call_soon_threadsafe(arrived.set)

    unsubscribe = core.store.on_change(changed)
    try:
        if not await asyncio.to_thread(core.store.list, "device"):
            await arrived.wait()
    finally:
        unsubscribe()


async def _check_external_broker(core) -> list[str]:
    """Run ``python -m kedge.edge.brokercheck EDGEDIR``; what the operator's broker gets wrong."""
    from kedge.edge import brokercheck, child

    try:
        out, rc = await child.run_module("kedge.edge.brokercheck", str(core.dir.root),
                                         timeout_s=BROKER_CHECK_TIMEOUT_S, code="broker_check_failed")
    except TimeoutError:
        return ["the broker check did not finish in time"]
    return brokercheck.parse_result(out, rc)


async def _run_with_external_broker(core, ext: dict[str, str]) -> None:
    try:
        problems = await _check_external_broker(core)
    except KedgeError as exc:
        problems = [f"the check failed: {exc.code}"]
    if problems:
        log.error("device management is off: the MQTT broker %s falls short: %s", ext["url"], "; ".join(problems))
        return
    log.info("using the operator's MQTT broker %s (TLS 1.3 only, client certificates required, checked)",
             ext["url"])
    broker = ExternalBroker(ext["url"])
    await asyncio.to_thread(fsutil.update_json, core.dir.endpoints, {"mqtt": ext["url"]})
    await _wait_for_devices(core)
    service = DeviceTwinService(core, broker)
    try:
        await service.run()
    finally:
        await asyncio.to_thread(service.close)


async def run_devicetwin(core) -> None:
    """edgecore component: device management (broker + twins). Returns only if it is off."""
    root = core.dir.root
    ext = core.hub.cfg.mqtt_broker
    if ext is not None:
        await _run_with_external_broker(core, ext)
        return
    if find_mosquitto() is None:
        log.error("device management is off: mosquitto is not installed (apt-get install mosquitto, "
                  "or set KEDGE_MOSQUITTO to its path)")
        return
    await ensure_certs(core)
    pki_dir = core.dir.pki
    broker = Broker(root / "mqtt", core.node, cafile=pki_dir / "mqtt-ca.crt",
                    certfile=pki_dir / "mqtt-broker.crt", keyfile=pki_dir / "mqtt-broker.key",
                    crlfile=pki_dir / CRL_FILE)
    try:
        known = fsutil.read_json(core.dir.endpoints, {})
    except KedgeError:
        known = {}  # unreadable: it is rewritten below
    previous = known.get("mqtt", "") if isinstance(known, dict) else ""
    preferred = None
    if isinstance(previous, str) and previous.rsplit(":", 1)[-1].isdigit():
        preferred = int(previous.rsplit(":", 1)[-1])
    starting = asyncio.ensure_future(asyncio.to_thread(broker.start, (), preferred_port=preferred))
    try:
        url = await asyncio.shield(starting)
    except BrokerUnavailable as exc:
        log.error("device management is off: %s", exc)
        return
    except asyncio.CancelledError:
        # edgecore is stopping while the broker starts in a worker thread: let the start
        # finish, then stop it, so no mosquitto outlives its edgecore.
        with contextlib.suppress(Exception):
            await starting
        broker.stop()
        raise
    service = None
    try:
        await asyncio.to_thread(fsutil.update_json, core.dir.endpoints, {"mqtt": url})
        # The broker is up (mappers can find it); the twin service with its MQTT client, worker
        # thread and table starts only once a device is bound to this node: an edge without
        # devices stays small.
        await _wait_for_devices(core)
        service = DeviceTwinService(core, broker)
        await service.run()
    finally:
        if service is not None:
            await asyncio.to_thread(service.close)
        broker.stop()
