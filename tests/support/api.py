"""A small HTTPS JSON client for the real API server, and the identities tests drive it as.

Every request opens its own TLS connection with the identity's client certificate, so a
test sees exactly what one ``kubectl`` call would: the status and the decoded body.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kedge import tls
from kedge.pki import ca as pki
from support.cluster import Cloud

RBAC = "rbac.authorization.k8s.io"


class Api:
    """One identity's view of the API server at ``url`` (``https://host:port``)."""

    def __init__(self, url: str, ctx: ssl.SSLContext) -> None:
        host, port = url.removeprefix("https://").rsplit(":", 1)
        self.host, self.port, self.ctx = host, int(port), ctx

    def _connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
                headers: Mapping[str, str] | None = None, timeout: float = 10) -> tuple[int, Any]:
        """``(status, decoded JSON body or None)`` of one request; ``body`` is sent as JSON."""
        conn = self._connect(timeout)
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                         headers={"Content-Type": ctype, **(headers or {})})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()

    def watch(self, path: str) -> tuple[int, Lines]:
        """Open a watch: its status and a reader of its events (close it when done)."""
        conn = self._connect(10)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, Lines(conn, resp)


class Lines:
    """The events of one watch stream, one JSON object a line."""

    def __init__(self, conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse) -> None:
        self.conn, self.resp = conn, resp

    def next(self) -> tuple[str, str]:
        """The next event as (type, name); a read timeout fails the test (it never means 'nothing')."""
        while True:
            line = self.resp.readline()
            if not line:
                raise AssertionError("watch ended")
            if line.strip():
                ev = json.loads(line)
                return ev["type"], ev["object"]["metadata"]["name"]

    def close(self) -> None:
        self.conn.close()


def admin_api(cloud: Cloud) -> Api:
    """The cluster admin ``kedge init`` made (``system:masters``)."""
    pki_dir = cloud.dir / "pki"
    return Api(cloud.endpoints()["api"],
               tls.client_context(pki_dir / "ca.crt", pki_dir / "admin.crt", pki_dir / "admin.key"))


def node_api(cloud: Cloud, edge_dir: Path) -> Api:
    """A joined node's own identity (``system:node:<name>``), from its edge data dir."""
    edge_pki = edge_dir / "pki"
    return Api(cloud.endpoints()["api"],
               tls.client_context(edge_pki / "ca.crt", edge_pki / "node.crt", edge_pki / "node.key"))


def user_api(cloud: Cloud, cn: str, orgs: Sequence[str] = (), *, out_dir: Path) -> Api:
    """A user ``cn`` in groups ``orgs``, with a client certificate the cluster CA mints now
    (its key and certificate are written to ``out_dir``)."""
    pki_dir = cloud.dir / "pki"
    ca_key, ca_cert = pki.load_key_file(pki_dir / "ca.key"), pki.load_cert_file(pki_dir / "ca.crt")
    key, cert = pki.issue_client_cert(ca_key, ca_cert, common_name=cn, organizations=list(orgs),
                                      now=dt.datetime.now(dt.UTC))
    (out_dir / f"{cn}.key").write_bytes(pki.key_to_pem(key))
    (out_dir / f"{cn}.crt").write_bytes(pki.cert_to_pem(cert))
    return Api(cloud.endpoints()["api"],
               tls.client_context(pki_dir / "ca.crt", out_dir / f"{cn}.crt", out_dir / f"{cn}.key"))


def create_namespace(admin: Api, name: str, labels: Mapping[str, str] | None = None) -> None:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = dict(labels)
    status, body = admin.request("POST", "/api/v1/namespaces", {"metadata": meta})
    assert status == 201, body


def bind(admin: Api, ns: str, name: str, user: str, *, role: str, kind: str = "Role") -> None:
    """A RoleBinding ``name`` in ``ns`` giving ``user`` the Role (or ClusterRole) ``role``."""
    status, body = admin.request("POST", f"/apis/{RBAC}/v1/namespaces/{ns}/rolebindings", {
        "metadata": {"name": name}, "roleRef": {"apiGroup": RBAC, "kind": kind, "name": role},
        "subjects": [{"kind": "User", "apiGroup": RBAC, "name": user}]})
    assert status == 201, body


def grant(admin: Api, ns: str, name: str, user: str, rules: list[dict]) -> None:
    """A Role ``name`` in ``ns`` with ``rules``, bound to ``user`` by a RoleBinding of the same name."""
    status, body = admin.request("POST", f"/apis/{RBAC}/v1/namespaces/{ns}/roles",
                                 {"metadata": {"name": name}, "rules": rules})
    assert status == 201, body
    bind(admin, ns, name, user, role=name)


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """``{family name: {(sample name, sorted labels): value}}`` of one ``GET <url>/metrics``,
    parsed by the Prometheus client's own parser."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:  # noqa: S310 - loopback test URL
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.read().decode()
    families: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        samples = families.setdefault(family.name, {})
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families
