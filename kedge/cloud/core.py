"""``kedge cloudcore``: the certificate endpoint, CloudHub and (later) the controllers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from pathlib import Path

from kedge._internal.net import url_host
from kedge import tls
from kedge._internal import fsutil
from kedge._internal.auditlog import AuditLog
from kedge.cloud.certserver import CertService, start_cert_server
from kedge.cloud.config import CloudDir
from kedge.cloud.hub import CloudHub
from kedge.cloud.metrics import CloudMetrics, ObservedAudit
from kedge._internal.metrics import parse_address
from kedge.cloud.state import CloudState
from kedge.cloud.trust import ClusterTrust

log = logging.getLogger(__name__)



class CloudCore:
    def __init__(self, data_dir: str | Path, *, kubeconfig: str | None = None,
                 metrics_address: str | None = None) -> None:
        self.dir = CloudDir(data_dir)
        self.cfg = self.dir.load_config()
        self.limits = self.cfg.build_limits()
        self.kubeconfig = kubeconfig
        self.state = CloudState(self.dir.state_db)
        # Counted (and the important events logged) as written; the file and its format are unchanged.
        self.audit = ObservedAudit(AuditLog(self.dir.audit_log_path(self.cfg)))
        self.metrics_address = metrics_address
        if metrics_address is not None:
            parse_address(metrics_address)  # a usage error before anything starts
        self.metrics: CloudMetrics | None = None
        self.hub: CloudHub | None = None
        self.cert_server: asyncio.base_events.Server | None = None
        self.endpoints: dict[str, str] = {}
        self.api_server = None
        self.api_store = None
        self.controller = None
        self._connected_dirty = asyncio.Event()

    @property
    def advertise(self) -> str:
        return url_host(self.cfg.advertise_addresses[0])

    async def _start_api(self) -> None:
        """The embedded API server (unless --kubeconfig) and the edgecontroller's client."""
        from kedge.cloud.edgecontroller.controller import EdgeController
        from kedge.cloud.edgecontroller.kubeapi import KubeAPI

        d = self.dir
        if self.kubeconfig:
            api = await asyncio.to_thread(KubeAPI, kubeconfig=self.kubeconfig)
        else:
            from kedge.apiserver.server import start_apiserver

            self.api_server, self.api_store, url = await start_apiserver(d.root)
            self.endpoints["api"] = url
            api = await asyncio.to_thread(KubeAPI, host=url, ca=d.ca_crt, cert=d.cloudcore_crt, key=d.cloudcore_key)
        self.controller = EdgeController(api, node_grace_s=self.cfg.node_monitor_grace_s, audit=self.audit.write)
        from kedge.cloud import devicecontroller

        if self.api_server is not None:
            # Same process as the API server: device status goes in-process, as cloudcore's
            # certificate identity (authorized and audited like a request over TLS).
            from kedge.apiserver.local import LocalClient

            backend: devicecontroller.Backend = devicecontroller.LocalDevices(
                LocalClient.for_certificate(self.api_server, d.cloudcore_crt))
        else:
            backend = devicecontroller.ClientDevices(api)
        devicecontroller.install(self.controller, backend, d.root, audit=self.audit.write)
        self._lifecycle_task = asyncio.create_task(self.controller.node_lifecycle())

    async def start(self) -> dict[str, str]:
        d, cfg = self.dir, self.cfg
        if self.metrics_address is not None:
            self.metrics = CloudMetrics(self, self.audit)
        await self._start_api()
        if self.metrics is not None and self.api_server is not None:
            self.api_server.on_request = self.metrics.observe_request
            self.api_store.on_commit = self.metrics.observe_commit
        # The cluster CA(s) and the serving certificate follow `kedge ca rotate|finish` while we run.
        trust = await asyncio.to_thread(ClusterTrust, d)
        hub_ctx = tls.ReloadingServerContext(d.hub_crt, d.hub_key, d.ca_crt, client_cert="required",
                                             allow_tls12=cfg.allow_tls12).context
        cert_ctx = tls.ReloadingServerContext(d.hub_crt, d.hub_key, d.ca_crt, client_cert="optional",
                                              allow_tls12=cfg.allow_tls12).context
        self.hub = CloudHub(ssl_ctx=hub_ctx, limits=self.limits, state=self.state, audit=self.audit,
                            router=self.controller.route, on_change=self._connected_dirty.set,
                            on_session_closed=self.controller.session_closed, trust=trust)
        if self.api_server is not None:
            hub = self.hub
            self.api_server.api.node_session = lambda node: hub.sessions.get(node)  # kubectl logs
        hub_port = await self.hub.start(cfg.bind_address, cfg.hub_port)
        hub_url = f"wss://{self.advertise}:{hub_port}"
        service = CertService(
            trust=trust, state=self.state, audit=self.audit, limits=self.limits,
            node_cert_validity=dt.timedelta(seconds=cfg.node_cert_validity_s), hub_url=lambda: hub_url)
        self.cert_server = await start_cert_server(service, cert_ctx, cfg.bind_address, cfg.cert_port, self.limits)
        cert_port = self.cert_server.sockets[0].getsockname()[1]
        self.endpoints.update({"hub": hub_url, "certs": f"https://{self.advertise}:{cert_port}"})
        if self.metrics is not None and self.metrics_address is not None:
            self.endpoints["metrics"] = await self.metrics.start(self, self.metrics_address)
        fsutil.update_json(d.endpoints, self.endpoints)
        self.audit.write("cloudcore_started", hub=hub_url, certs=self.endpoints["certs"])
        self._connected_task = asyncio.create_task(self._write_connected())
        log.info("cloudhub listening on %s, certificate endpoint on %s", hub_url, self.endpoints["certs"],
                 extra={"event": "cloudcore.started"})
        return self.endpoints

    async def _write_connected(self) -> None:
        """Keep ``DIR/connected.json`` (the nodes with a live tunnel) current, debounced."""
        while True:
            await self._connected_dirty.wait()
            self._connected_dirty.clear()
            assert self.hub is not None  # nosec B101 - set in start()
            nodes = sorted(self.hub.sessions)
            data = (json.dumps({"nodes": nodes}) + "\n").encode()
            await asyncio.to_thread(fsutil.atomic_write, self.dir.connected, data)
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        lifecycle = getattr(self, "_lifecycle_task", None)
        if lifecycle is not None:  # before the API server goes: it would only fail against it
            lifecycle.cancel()
            await asyncio.gather(lifecycle, return_exceptions=True)
        if self.hub is not None:
            await self.hub.stop()
        if self.cert_server is not None:
            self.cert_server.close()
        if self.metrics is not None:
            self.metrics.stop()
        if self.controller is not None:
            for sync in list(self.controller.syncs.values()):
                sync.cancel()
            dc = getattr(self.controller, "devicecontroller", None)
            if dc is not None:
                await dc.close()
        if self.api_server is not None:
            await self.api_server.stop()
            self.api_store.close()
        self.state.close()
        self.audit.close()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
