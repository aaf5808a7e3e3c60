"""Real kedge processes on 127.0.0.1 for integration and threat tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]


def kedge(*args: str, check: bool = False, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI as a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "kedge", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"kedge {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a child that is still running: ``sig``, then a kill if it has not exited in 10 s."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Cloud:
    """A cloud data dir plus a running ``kedge cloudcore`` subprocess."""

    def __init__(self, root: Path, *, config: dict | None = None, validity: str | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.args = args  # extra `kedge cloudcore` options (e.g. --metrics-address)
        self.dir = root / "cloud"
        args = ["init", "--data-dir", str(self.dir), "--api-port", "0", "--hub-port", "0", "--cert-port", "0"]
        if validity:
            args += ["--node-cert-validity", validity]
        kedge(*args, check=True)
        if config:
            cfg = json.loads((self.dir / "config.json").read_text())
            for key, value in config.items():
                if isinstance(value, dict):
                    cfg.setdefault(key, {}).update(value)
                else:
                    cfg[key] = value
            (self.dir / "config.json").write_text(json.dumps(cfg))
        self.proc: subprocess.Popen | None = None
        self.log = root / "cloudcore.log"

    def start(self) -> "Cloud":
        previous = self.endpoints()
        if previous:
            # A restart keeps the ports the first start picked, as a real deployment's fixed ports.
            cfg = json.loads((self.dir / "config.json").read_text())
            for key, field in (("api", "api_port"), ("hub", "hub_port"), ("certs", "cert_port")):
                if key in previous:
                    cfg[field] = int(previous[key].rsplit(":", 1)[1])
            (self.dir / "config.json").write_text(json.dumps(cfg))
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "endpoints.json").unlink()
        self._logfh = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "kedge", "cloudcore", "--data-dir", str(self.dir),
                                      *self.args],
                                     stdout=self._logfh, stderr=subprocess.STDOUT, cwd=REPO)
        wait_until(lambda: self.endpoints().get("hub") and self.endpoints().get("certs"), 30,
                   what="cloudcore endpoints")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            stop_process(self.proc, sig)
            self._logfh.close()
        self.proc = None

    def endpoints(self) -> dict:
        try:
            return json.loads((self.dir / "endpoints.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    @property
    def certs_hostport(self) -> str:
        return self.endpoints()["certs"].removeprefix("https://")

    @property
    def hub_hostport(self) -> tuple[str, int]:
        host, port = self.endpoints()["hub"].removeprefix("wss://").rsplit(":", 1)
        return host, int(port)

    @property
    def certs_port(self) -> int:
        return int(self.certs_hostport.rsplit(":", 1)[1])

    def token(self, node: str, ttl: str | None = None) -> str:
        args = ["token", "create", "--data-dir", str(self.dir), "--node", node]
        if ttl:
            args += ["--ttl", ttl]
        return kedge(*args, check=True).stdout.strip()

    def join(self, node: str, edge_dir: Path | None = None, token: str | None = None) -> subprocess.CompletedProcess:
        edge_dir = edge_dir or self.root / node
        return kedge("join", "--cloud", self.certs_hostport, "--token", token or self.token(node),
                     "--node", node, "--data-dir", str(edge_dir))

    def connected(self) -> set[str]:
        try:
            return set(json.loads((self.dir / "connected.json").read_text())["nodes"])
        except (FileNotFoundError, ValueError, KeyError):
            return set()

    def audit(self) -> list[dict]:
        path = self.dir / "audit.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class EdgeProcess:
    def __init__(self, edge_dir: Path, log: Path) -> None:
        self.dir = edge_dir
        self._fh = open(log, "ab")
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "kedge", "edgecore", "--data-dir", str(edge_dir)],
                                     stdout=self._fh, stderr=subprocess.STDOUT, cwd=REPO)

    def stop(self) -> None:
        stop_process(self.proc)
        self._fh.close()


@contextlib.contextmanager
def running_cloud(root: Path, **kw: Any) -> Iterator[Cloud]:
    cloud = Cloud(root, **kw).start()
    try:
        yield cloud
    finally:
        cloud.stop()


def file_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def pods_root(edge_dir: Path, node: str) -> Path:
    from kedge.edge.config import EdgeDir
    from kedge.edge.core import default_pods_root

    return default_pods_root(EdgeDir(edge_dir), node)


def pod_processes(root: Path) -> list[int]:
    """PIDs of processes whose working directory is under a pods root."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(root) or cwd.startswith(str(root) + "/"):
            pids.append(int(entry.name))
    return pids


def remove_pods(edge_dir: Path, node: str) -> None:
    """Test teardown: pods outlive edgecore on purpose (edge autonomy); kill them and their dirs."""
    import shutil

    root = pods_root(edge_dir, node)
    for pid in pod_processes(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)
