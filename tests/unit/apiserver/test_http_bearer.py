"""Bearer authentication in the HTTP shell: any failure is a 401, never a dropped connection.

A real ``ApiServer`` on 127.0.0.1 with real TLS over a real SQLite store; the client
presents no certificate, only ``Authorization: Bearer ...``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kedge import tls
from kedge.apiserver import satoken
from kedge.apiserver.api import API, Request, User
from kedge.apiserver.http import ApiServer
from kedge.pki import ca
from kedge.store.sqlite import Store

NOW = 1_700_000_000
ADMIN = User("admin", ("system:masters", "system:authenticated"))
SA_KEY = ec.generate_private_key(ec.SECP256R1())
READ_LIMIT = 1 << 20
IO_TIMEOUT_S = 5.0


@pytest.fixture()
def pki_files(tmp_path: Path) -> dict[str, Path]:
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, ca_cert = ca.create_ca("bearer-test-ca", now=now)
    key, cert = ca.issue_server_cert(ca_key, ca_cert, common_name="apiserver", sans=["127.0.0.1"], now=now)
    files = {"ca": tmp_path / "ca.crt", "crt": tmp_path / "api.crt", "key": tmp_path / "api.key"}
    files["ca"].write_bytes(ca.cert_to_pem(ca_cert))
    files["crt"].write_bytes(ca.cert_to_pem(cert))
    files["key"].write_bytes(ca.key_to_pem(key))
    return files


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _get(port: int, ctx: ssl.SSLContext, token: str) -> bytes:
    """One ``GET`` with a bearer token on a fresh connection; everything the server sent before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    try:
        writer.write(f"GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        data = b""
        async with asyncio.timeout(IO_TIMEOUT_S):
            while len(data) < READ_LIMIT:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
        return data
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


def _status(response: bytes) -> int | None:
    """The status code of an HTTP/1.1 response, or None if the server sent no status line."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])


def _run(store: Store, files: dict[str, Path], tokens: list[str], *, close_store_first: bool = False) -> list[int | None]:
    """Serve the API on a free loopback port and send each token; the status codes, in order."""
    api = API(store, clock=lambda: float(NOW), sa_key=SA_KEY)
    server = ApiServer(api, tls.server_context(files["crt"], files["key"], files["ca"], client_cert="optional"))
    client_ctx = tls.client_context(files["ca"])

    async def main() -> list[int | None]:
        port = await server.start()
        try:
            if close_store_first:
                store.close()  # the storage fails underneath a request that needs it
            return [_status(await _get(port, client_ctx, t)) for t in tokens]
        finally:
            await server.stop()

    return asyncio.run(main())


def _service_account_token(store: Store) -> str:
    """A correctly signed token for a service account that exists in ``store``."""
    api = API(store, clock=lambda: float(NOW), sa_key=SA_KEY)
    resp = api.handle(Request("POST", "/api/v1/namespaces/default/serviceaccounts",
                              {"content-type": ["application/json"]}, b'{"metadata":{"name":"robot"}}', ADMIN))
    assert resp.status == 201, resp.body
    uid = api.store.get("/serviceaccounts", "default", "robot")["metadata"]["uid"]
    claims = satoken.TokenClaims(namespace="default", name="robot", uid=uid, audiences=(satoken.API_AUDIENCE,),
                                 issued_at=NOW, expires_at=NOW + 3600)
    return satoken.issue(SA_KEY, claims)


def test_deeply_nested_token_header_is_401_not_a_crash(tmp_path, pki_files):
    """``base64url("[" * 1500) + ".e30.AAAA"`` once made json.loads recurse and the connection drop."""
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    try:
        good = _service_account_token(store)
        nested = _b64(b"[" * 1500) + ".e30.AAAA"
        nested_claims = _b64(b'{"alg":"ES256"}') + "." + _b64(b"{" * 1500) + "." + "A" * 86
        statuses = _run(store, pki_files, [nested, nested_claims, good])
    finally:
        store.close()
    # the valid token authenticates (403: no RBAC grant), so the 401s are about the tokens
    assert statuses == [401, 401, 403]


def test_bearer_authentication_failure_inside_the_store_is_401_not_a_dropped_connection(tmp_path, pki_files):
    """Any exception from authenticate_bearer -- here a closed database -- answers 401."""
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    good = _service_account_token(store)
    assert _run(store, pki_files, [good], close_store_first=True) == [401]


def test_open_watch_of_a_token_whose_service_account_is_deleted_ends_within_2s(tmp_path, pki_files):
    """A bearer token is checked again while its watch is open: once it no longer authenticates
    (its service account -- or bound pod -- is gone) the watch ends, as a revoked certificate's does."""
    store = Store(tmp_path / "api.db", window=50, synchronous="NORMAL")
    try:
        token = _service_account_token(store)
        api = API(store, clock=lambda: float(NOW), sa_key=SA_KEY)
        binding = (b'{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",'
                   b'"metadata":{"name":"robot-admin"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io",'
                   b'"kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"ServiceAccount",'
                   b'"name":"robot","namespace":"default"}]}')
        resp = api.handle(Request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                                  {"content-type": ["application/json"]}, binding, ADMIN))
        assert resp.status == 201, resp.body
        server = ApiServer(api, tls.server_context(pki_files["crt"], pki_files["key"], pki_files["ca"],
                                                   client_cert="optional"))

        async def main() -> float:
            port = await server.start()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context(pki_files["ca"]),
                                                               server_hostname="127.0.0.1")
                writer.write(f"GET /api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=300 HTTP/1.1\r\n"
                             f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode("latin-1"))
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
                assert _status(head) == 200, head
                with pytest.raises(TimeoutError):  # open while the token is good
                    await asyncio.wait_for(reader.read(65536), 1.5)
                gone = api.handle(Request("DELETE", "/api/v1/namespaces/default/serviceaccounts/robot", {}, b"", ADMIN))
                assert gone.status == 200, gone.body
                t0 = asyncio.get_running_loop().time()
                async with asyncio.timeout(10):
                    while await reader.read(65536):
                        pass
                writer.close()
                return asyncio.get_running_loop().time() - t0
            finally:
                await server.stop()

        elapsed = asyncio.run(main())
    finally:
        store.close()
    assert elapsed <= 2.0, f"watch ended {elapsed:.2f}s after its service account was deleted"
