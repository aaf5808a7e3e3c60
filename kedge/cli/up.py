"""``kedge up``: an all-in-one local cluster on loopback, in the foreground."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import socket
import subprocess  # nosec B404 - starts kedge's own processes, argv lists only
import sys
import time
from pathlib import Path
from typing import TextIO

from kedge._internal import fsutil
from kedge.errors import LocalError

WAIT_S = 30.0


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kedge(*args: str) -> list[str]:
    return [sys.executable, "-m", "kedge", *args]


def _wait_for(predicate, what: str, procs: list[subprocess.Popen], timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise LocalError(f"{' '.join(p.args[3:5])} exited with {p.returncode} while waiting for {what}")
        time.sleep(0.1)
    raise LocalError(f"timed out waiting for {what}")


def _own_pod_id_range(edge_dir: Path, index: int) -> None:
    """Edges on one host must not share pod uids: each demo edge gets its own 65536 ids."""
    from kedge.edge.config import EdgeDir

    d = EdgeDir(edge_dir)
    cfg = d.load_config()
    first = 200000 + index * 65536
    wanted = f"{first}-{first + 65535}"
    if cfg.pod_uid_range != wanted:
        d.save_config(dataclasses.replace(cfg, pod_uid_range=wanted))


def run_up(root: Path, *, edges: int, out: TextIO, log_format: str = "text") -> int:
    from kedge.cloud.config import CloudDir
    from kedge.cloud.init import init_cloud
    from kedge.cloud.state import CloudState
    from kedge.edge.join import join
    from kedge.pki import ca as pki
    from kedge.pki import tokens

    if not 0 <= edges <= 100:
        raise LocalError("--edges must be between 0 and 100")
    fsutil.make_private_dir(root)
    cloud = CloudDir(root / "cloud")
    if not cloud.ca_crt.exists():
        ports = {name: (default if _port_free(default) else 0)
                 for name, default in (("api", 6443), ("hub", 10000), ("certs", 10002))}
        init_cloud(cloud.root, api_port=ports["api"], hub_port=ports["hub"], cert_port=ports["certs"])
        print(f"initialised cluster in {cloud.root}", file=out)
    with contextlib.suppress(FileNotFoundError):
        cloud.endpoints.unlink()
    with contextlib.suppress(FileNotFoundError):
        cloud.connected.unlink()
    procs: list[subprocess.Popen] = []

    def stop(*_a) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        # Metrics on loopback, free ports: listed below from endpoints.json.
        procs.append(subprocess.Popen(_kedge("cloudcore", "--data-dir", str(cloud.root), "--log-format", log_format,  # nosec B603 - argv of our own interpreter and module
                                             "--metrics-address", "127.0.0.1:0")))
        endpoints = _wait_for(lambda: (fsutil.read_json(cloud.endpoints, {}) or {}).get("certs") and
                              fsutil.read_json(cloud.endpoints), "cloudcore endpoints", procs)
        certs = endpoints["certs"].removeprefix("https://")
        names = [f"edge-{i}" for i in range(1, edges + 1)]
        for name in names:
            edge_dir = root / name
            if not (edge_dir / "pki" / "node.crt").exists():
                tok = tokens.generate(pki.ca_fingerprint(pki.load_cert_file(cloud.ca_crt)))
                now = dt.datetime.now(dt.timezone.utc)
                state = CloudState(cloud.state_db)
                try:
                    state.add_token(token_id=tok.token_id, node=name,
                                    secret_hash=tokens.hash_secret(tok.token_id, tok.secret),
                                    expires_at=now + dt.timedelta(minutes=5), created_at=now)
                finally:
                    state.close()
                join(cloud=certs, token=tokens.format_token(tok), node=name, edge_dir=edge_dir)
                print(f"joined {name}", file=out)
            _own_pod_id_range(edge_dir, names.index(name))
            # A try-it-out cluster: its demo pods stop with it (a real edge keeps them running).
            procs.append(subprocess.Popen(_kedge("edgecore", "--data-dir", str(edge_dir), "--stop-pods-on-exit",  # nosec B603 - argv of our own interpreter and module
                                                 "--log-format", log_format, "--metrics-address", "127.0.0.1:0")))

        def all_connected():
            nodes = set((fsutil.read_json(cloud.connected, {}) or {}).get("nodes", []))
            return set(names) <= nodes

        _wait_for(all_connected, "edges to connect", procs)
        print("", file=out)
        print("kedge is up:", file=out)
        for key, url in sorted(fsutil.read_json(cloud.endpoints, {}).items()):
            print(f"  {key:<6} {url}", file=out)
        print(f"  edges  {', '.join(names) or '(none)'} connected", file=out)
        for name in names:
            edge_metrics = (fsutil.read_json(root / name / "endpoints.json", {}) or {}).get("metrics")
            if edge_metrics:
                print(f"  {name} metrics {edge_metrics}/metrics", file=out)
        print(f"  kubectl: export KUBECONFIG={cloud.kubeconfig.resolve()}", file=out)
        if os.geteuid() != 0:
            print("  pods: NOT RUN -- the edges' process runtime gives each pod a uid of its own, which "
                  "needs root; run `make up` as root to run pods (they wait with reason RuntimeNeedsRoot)",
                  file=out)
        print("Press Ctrl-C to stop.", file=out)
        out.flush()
        while True:
            for p in procs:
                if p.poll() is not None:
                    raise LocalError(f"{' '.join(p.args[3:5])} exited with {p.returncode}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping", file=out)
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
