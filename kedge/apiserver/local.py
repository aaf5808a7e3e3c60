"""In-process requests to the embedded API server, for the controllers that share its process.

cloudcore embeds the API server; the controllers in the same process may call it without a
TLS round trip through loopback. A :class:`LocalClient` speaks as the identity of one
client certificate (cloudcore's) and every request takes the path a request from the
network takes once TLS has authenticated it: the certificate's revocation is checked on
each request with the HTTPS shell's own check (a revoked identity gets ``401``; an open
watch ends), then impersonation, authorization,
admission, validation, durable (group-committed) writes, and one audit record per request
in the API server's audit log (``userAgent`` ``kedge-cloudcore/in-process``, no source IP).
What is skipped is what only exists on a socket: TLS, HTTP framing and the per-connection
bounds -- and the JSON of a caller's answer is handed back as bytes, parsed only if the
caller wants it.

Must be called on the API server's event loop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

from kedge.apiserver.model import LogStream, Request, Response, User, _dumps
from kedge.apiserver.watch import Watch
from kedge.apiserver.http import REVOCATION_POLL_S, ApiServer, _now_iso, audit_record_base
from kedge.apiserver.status import status_body
from kedge.authz.rbac import AUTHENTICATED
from kedge.errors import LocalError

USER_AGENT = "kedge-cloudcore/in-process"
WATCH_BATCH = 256


class WatchEnded(LocalError):
    """The watch cannot go on from where it is (overflowed or ended); list and watch again."""

    code = "watch_ended"


def identity_of(cert_path: Path) -> tuple[User, int]:
    """The user (CN), groups (every O, plus ``system:authenticated``) and serial of a client
    certificate -- what the HTTPS shell derives from the same certificate."""
    from cryptography.x509.oid import NameOID

    from kedge.pki import ca as pki

    cert = pki.load_cert_file(cert_path)  # bounded read, PemError on anything but a certificate
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        raise LocalError(f"{cert_path} has no common name", code="bad_certificate")
    orgs = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return User(str(cns[0].value), tuple(dict.fromkeys(orgs + [AUTHENTICATED]))), cert.serial_number


class LocalClient:
    def __init__(self, server: ApiServer, user: User, serial: int | None = None) -> None:
        self.server, self.user, self.serial = server, user, serial

    @classmethod
    def for_certificate(cls, server: ApiServer, cert_path: Path) -> "LocalClient":
        user, serial = identity_of(cert_path)
        return cls(server, user, serial)

    def _revoked(self) -> bool:
        """The HTTPS shell's own per-request check (revoked, or the CRL untrustworthy)."""
        return self.serial is not None and self.server.certificate_refused(self.serial)

    async def _serve(self, method: str, target: str, body: bytes, headers: dict[str, list[str]]) -> Response | Watch:
        base = audit_record_base([], USER_AGENT)
        if self._revoked():
            resp: Response | Watch = Response(401, _dumps(status_body(401, "Unauthorized", "Unauthorized")))
            resp.audit = {"requestURI": target[:2048], "verb": method.lower(),
                          "user": {"username": self.user.name}, "responseStatus": {"code": 401}}
        else:
            resp = await self.server.api.handle_async(Request(method, target, headers, body, self.user))
        if isinstance(resp, LogStream):  # not something a controller asks for; never left open
            resp = Response(400, b"{}")
            resp.audit = {"requestURI": target[:2048], "verb": method.lower(), "responseStatus": {"code": 400}}
        extra = {"responseStatus": {"code": 200}} if isinstance(resp, Watch) else {}
        self.server.audit(dict(base, **resp.audit, **extra, stageTimestamp=_now_iso()))
        return resp

    async def request(self, method: str, target: str, body: Any = None, *,
                      content_type: str = "application/json",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request; ``body`` (if not None) is sent as JSON. Returns (status, response body)."""
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        hdrs = {"content-type": [content_type], "accept": ["application/json"]}
        for k, v in (headers or {}).items():
            hdrs[k.lower()] = [v]
        resp = await self._serve(method, target, data, hdrs)
        if isinstance(resp, Watch):  # a GET with watch=1 belongs in watch()
            resp.close()
            return 400, b"{}"
        return resp.status, resp.body

    async def watch(self, target: str) -> AsyncIterator[dict[str, Any]]:
        """Events of a watch request (``target`` carries ``watch=1`` and its resourceVersion).

        Ends when the server ends the watch (its timeout); raises :class:`WatchEnded` when
        the watch overflowed (the consumer fell too far behind), ``LocalError`` with the
        status when the request itself was refused and ``LocalError('revoked')`` within
        ``REVOCATION_POLL_S`` of the certificate's revocation, as the HTTPS shell ends a
        revoked identity's watch. An ``ERROR`` event (410 Gone) is yielded like any other:
        the caller decides."""
        resp = await self._serve("GET", target, b"", {"accept": ["application/json"]})
        if not isinstance(resp, Watch):
            raise LocalError(f"watch refused with {resp.status}", code=f"http_{resp.status}")
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        resp.notify = wake.set
        deadline = loop.time() + resp.timeout_s
        try:
            while True:
                if resp.lines:
                    for line in resp.take(WATCH_BATCH):
                        yield json.loads(line)
                    continue
                if resp.overflowed:
                    raise WatchEnded("the watch fell behind and was dropped")
                if resp.closed or loop.time() >= deadline:
                    return
                if self._revoked():
                    raise LocalError("the watch's certificate was revoked", code="revoked")
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout=min(REVOCATION_POLL_S, max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    continue  # the deadline and the revocation are checked above
        finally:
            resp.close()

