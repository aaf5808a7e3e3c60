"""Pod Security admission seen through the real kubectl against a real cloudcore (HTTPS, admin cert)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.cluster import REPO, Cloud, running_cloud, wait_until

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
RESTRICTED_NS = "psa-restricted"
WARN_NS = "psa-warn"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with running_cloud(tmp_path_factory.mktemp("psa")) as c:
        wait_until(lambda: c.endpoints().get("api"), 30, what="api endpoint")
        yield c


def kubectl(cloud: Cloud, *args: str, input: str | None = None, kubeconfig: Path | None = None
            ) -> subprocess.CompletedProcess:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig or cloud.dir / "admin.kubeconfig"), HOME=str(cloud.root))
    return subprocess.run([KUBECTL, "--cache-dir", str(cloud.root / "kcache"), *args], env=env, input=input,
                          capture_output=True, text=True, timeout=60, check=False)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr
    return r


def pod(name: str, ns: str, **spec) -> str:
    container = {"name": "c", "image": "registry.k8s.io/pause", **spec.pop("container", {})}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                       "spec": {"containers": [container], **spec}})


def restricted(name: str, ns: str) -> str:
    return pod(name, ns, container={"securityContext": {"allowPrivilegeEscalation": False,
                                                        "capabilities": {"drop": ["ALL"]}}},
               securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}})


def test_enforce_restricted_refuses_privileged_and_host_path_pods_with_kubernetes_message(cloud):
    ok(kubectl(cloud, "create", "namespace", RESTRICTED_NS))
    ok(kubectl(cloud, "label", "namespace", RESTRICTED_NS, "pod-security.kubernetes.io/enforce=restricted"))

    r = kubectl(cloud, "apply", "-f", "-", input=pod("priv", RESTRICTED_NS,
                                                      container={"securityContext": {"privileged": True}}))
    assert r.returncode == 1
    assert r.stderr.strip() == (
        'Error from server (Forbidden): error when creating "STDIN": pods "priv" is forbidden: violates PodSecurity '
        '"restricted:latest": privileged (container "c" must not set securityContext.privileged=true), '
        'allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), seccompProfile '
        '(pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')

    r = kubectl(cloud, "apply", "-f", "-", input=pod("hostpath", RESTRICTED_NS,
                                                      volumes=[{"name": "host", "hostPath": {"path": "/"}}]))
    assert r.returncode == 1
    assert 'Error from server (Forbidden): error when creating "STDIN": pods "hostpath" is forbidden: violates ' \
           'PodSecurity "restricted:latest": ' in r.stderr
    assert 'restricted volume types (volume "host" uses restricted volume type "hostPath")' in r.stderr

    r = ok(kubectl(cloud, "apply", "-f", "-", input=restricted("compliant", RESTRICTED_NS)))
    assert "pod/compliant created" in r.stdout and "Warning" not in r.stderr
    assert ok(kubectl(cloud, "get", "pods", "-n", RESTRICTED_NS, "-o", "name")).stdout.split() == ["pod/compliant"]


def test_warn_restricted_prints_a_warning_in_kubectl_and_admits(cloud):
    ok(kubectl(cloud, "create", "namespace", WARN_NS))
    ok(kubectl(cloud, "label", "namespace", WARN_NS, "pod-security.kubernetes.io/warn=restricted"))
    r = ok(kubectl(cloud, "run", "plain", "-n", WARN_NS, "--image=registry.k8s.io/pause"))
    assert 'Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false ' \
           '(container "plain" must set securityContext.allowPrivilegeEscalation=false)' in r.stderr
    assert "pod/plain created" in r.stdout
    # Relabelling to enforce a level the pod violates warns about it (and keeps it).
    r = ok(kubectl(cloud, "label", "namespace", WARN_NS, "pod-security.kubernetes.io/enforce=restricted"))
    assert f'Warning: existing pods in namespace "{WARN_NS}" violate the new PodSecurity enforce level ' \
           '"restricted:latest"' in r.stderr
    assert "Warning: plain: allowPrivilegeEscalation != false, unrestricted capabilities" in r.stderr


def test_default_is_baseline_and_audit_records_carry_the_policy(cloud):
    r = kubectl(cloud, "apply", "-f", "-", input=pod("hostnet", "default", hostNetwork=True))
    assert r.returncode == 1 and 'pods "hostnet" is forbidden: violates PodSecurity "baseline:latest": host ' \
                                 'namespaces (hostNetwork=true)' in r.stderr
    ok(kubectl(cloud, "create", "namespace", "psa-audit"))
    ok(kubectl(cloud, "label", "namespace", "psa-audit", "pod-security.kubernetes.io/audit=restricted"))
    ok(kubectl(cloud, "run", "audited", "-n", "psa-audit", "--image=registry.k8s.io/pause"))

    def record() -> dict | None:
        log = cloud.dir / "apiserver-audit.log"
        for line in log.read_text().splitlines() if log.exists() else ():
            rec = json.loads(line)
            ref = rec.get("objectRef") or {}
            if rec.get("verb") == "create" and ref.get("namespace") == "psa-audit" and ref.get("resource") == "pods":
                return rec
        return None

    rec = wait_until(record, 10, what="audit record of the pod")
    assert rec["annotations"]["pod-security.kubernetes.io/enforce-policy"] == "baseline:latest"
    assert rec["annotations"]["pod-security.kubernetes.io/audit-violations"].startswith(
        'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false')


def test_init_pod_security_sets_the_cluster_default(tmp_path):
    data = tmp_path / "cloud"
    r = subprocess.run([sys.executable, "-m", "kedge", "init", "--data-dir", str(data), "--api-port", "0",
                        "--pod-security", "privileged"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads((data / "config.json").read_text())["pod_security"] == "privileged"
    bad = subprocess.run([sys.executable, "-m", "kedge", "init", "--data-dir", str(tmp_path / "x"),
                          "--pod-security", "lenient"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--pod-security" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "kedge", "apiserver", "--data-dir", str(data)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (data / "endpoints.json").exists() and json.loads(
            (data / "endpoints.json").read_text()).get("api"), 30, what="apiserver endpoint")
        env = dict(os.environ, KUBECONFIG=str(data / "admin.kubeconfig"), HOME=str(tmp_path))
        r = subprocess.run([KUBECTL, "--cache-dir", str(tmp_path / "kc"), "apply", "-f", "-"], env=env,
                           input=pod("hostnet", "default", hostNetwork=True), capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 0 and "pod/hostnet created" in r.stdout, r.stderr
    finally:
        proc.terminate()
        proc.wait(10)
