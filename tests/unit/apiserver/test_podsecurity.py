"""The pure Pod Security core: labels to policy, versions, messages, exemptions by pod shape."""

from __future__ import annotations

import pytest

from kedge.apiserver import podsecurity as ps
from kedge.apiserver.model import WARNING_ITEM_RUNES, warning_header_values

DEFAULTS = ps.default_policy("baseline")


def lv(level, minor=None):
    return ps.LevelVersion(level, ps.Version(minor))


def test_no_labels_is_the_cluster_default():
    assert ps.policy_to_evaluate({}, DEFAULTS) == (ps.Policy(lv("baseline"), lv("privileged"), lv("privileged")), [])


def test_enforce_label_raises_warn_when_warn_is_not_set():
    p, errs = ps.policy_to_evaluate({ps.ENFORCE_LABEL: "restricted", ps.ENFORCE_VERSION_LABEL: "v1.29"}, DEFAULTS)
    assert not errs and p.enforce == lv("restricted", 29) and p.warn == lv("restricted", 29)
    p, _ = ps.policy_to_evaluate({ps.ENFORCE_LABEL: "restricted", ps.WARN_LABEL: "privileged"}, DEFAULTS)
    assert p.warn == lv("privileged")


@pytest.mark.parametrize(("labels", "expect"), [
    ({ps.ENFORCE_LABEL: "Restricted"}, ps.Policy(lv("restricted"), lv("privileged"), lv("privileged"))),
    ({ps.AUDIT_LABEL: "nope"}, ps.Policy(lv("baseline"), lv("privileged"), lv("privileged"))),
    ({ps.WARN_LABEL: ""}, ps.Policy(lv("baseline"), lv("privileged"), lv("privileged"))),
    ({ps.ENFORCE_VERSION_LABEL: "v1.01"}, ps.Policy(lv("baseline"), lv("privileged"), lv("privileged"))),
])
def test_unreadable_labels_fail_closed_for_enforce_and_open_for_audit_and_warn(labels, expect):
    p, errs = ps.policy_to_evaluate(labels, DEFAULTS)
    assert p == expect and len(errs) == 1


@pytest.mark.parametrize(("text", "minor", "ok"), [
    ("latest", None, True), ("v1.0", 0, True), ("v1.30", 30, True), ("v1.99", 99, True),
    ("v1.030", None, False), ("1.30", None, False), ("v2.0", None, False), ("v1.30\n", None, False),
    ("v1." + "9" * 40, None, False),
])
def test_versions_parse_as_kubernetes_does(text, minor, ok):
    version, err = ps.parse_version(text)
    assert version == ps.Version(minor) and (err is None) == ok


def test_future_versions_are_judged_as_the_newest():
    assert ps.Version(99).effective_minor == ps.MAX_MINOR == ps.LATEST.effective_minor
    assert str(ps.Version(99)) == "v1.99" and str(ps.LATEST) == "latest"


def spec(**kw):
    return {"containers": [{"name": "c", "image": "i"}], **kw}


def test_windows_pods_are_exempt_from_linux_only_restricted_checks_from_v1_25():
    windows = spec(os={"name": "windows"}, securityContext={"runAsNonRoot": True})
    assert ps.evaluate_pod(lv("restricted"), {}, windows).allowed
    before = ps.evaluate_pod(lv("restricted", 24), {}, windows)
    assert [v.reason for v in before.violations] == ["allowPrivilegeEscalation != false", "unrestricted capabilities",
                                                     "seccompProfile"]


def test_user_namespaced_pods_relax_run_as_checks_and_baseline_proc_mount_from_v1_35():
    pod = spec(hostUsers=False, securityContext={"runAsUser": 0})
    pod["containers"][0]["securityContext"] = {"procMount": "Unmasked", "allowPrivilegeEscalation": False,
                                               "capabilities": {"drop": ["ALL"]},
                                               "seccompProfile": {"type": "RuntimeDefault"}}
    assert ps.evaluate_pod(lv("baseline"), {}, pod).allowed
    assert [v.reason for v in ps.evaluate_pod(lv("restricted"), {}, pod).violations] == ["procMount"]
    assert [v.reason for v in ps.evaluate_pod(lv("restricted", 34), {}, pod).violations] == [
        "procMount", "runAsNonRoot != true", "runAsUser=0"]


def test_details_name_every_offender_as_kubernetes_does():
    pod = spec(hostNetwork=True, hostPID=True, securityContext={"sysctls": [{"name": "kernel.msgmax"},
                                                                            {"name": "net.ipv4.tcp_syncookies"}]})
    pod["initContainers"] = [{"name": "init", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080},
                                                                       {"containerPort": 81, "hostPort": 443}],
                              "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_RAW"]}}}]
    pod["containers"][0]["securityContext"] = {"seLinuxOptions": {"type": "spc_t", "user": "root"},
                                               "seccompProfile": {"type": "Unconfined"}}
    pod["containers"][0]["livenessProbe"] = {"httpGet": {"host": "169.254.169.254", "port": 80}}
    meta = {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined\n"}}
    assert ps.evaluate_pod(lv("baseline"), meta, pod).forbidden_detail() == (
        'forbidden AppArmor profile (annotation must not set AppArmor profile type to '
        '"container.apparmor.security.beta.kubernetes.io/c="unconfined\\n""), '
        'non-default capabilities (container "init" must not include "NET_RAW", "SYS_ADMIN" in '
        'securityContext.capabilities.add), '
        "host namespaces (hostNetwork=true, hostPID=true), "
        'hostPort (container "init" uses hostPorts 443, 8080), '
        'probe or lifecycle host (container "c" uses probe or lifecycle host "169.254.169.254"), '
        'seLinuxOptions (container "c" set forbidden securityContext.seLinuxOptions: type "spc_t"; '
        "user may not be set), "
        'seccompProfile (container "c" must not set securityContext.seccompProfile.type to "Unconfined"), '
        "forbidden sysctls (kernel.msgmax)")


def test_a_volume_with_two_sources_is_judged_by_the_restricted_one():
    pod = spec(volumes=[{"name": "v", "configMap": {"name": "x"}, "hostPath": {"path": "/"}}])
    r = ps.evaluate_pod(lv("restricted"), {}, pod)
    assert 'volume "v" uses restricted volume type "hostPath"' in r.forbidden_detail()
    assert not ps.evaluate_pod(lv("baseline"), {}, pod).allowed


def test_ill_typed_fields_fail_closed():
    pod = spec(securityContext={"runAsNonRoot": "true"})
    pod["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": "false", "capabilities": {"drop": ["ALL"]},
                                               "seccompProfile": {"type": "RuntimeDefault"}}
    reasons = [v.reason for v in ps.evaluate_pod(lv("restricted"), {}, pod).violations]
    assert reasons == ["allowPrivilegeEscalation != false", "runAsNonRoot != true"]


def test_go_quote_matches_go():
    assert ps.go_quote('a"b\\c\n\x00é\u200b') == '"a\\"b\\\\c\\n\\x00é\\u200b"'


def test_significant_updates():
    old = {"spec": spec(initContainers=[{"name": "i", "image": "a"}])}
    new = {"spec": spec(initContainers=[{"name": "i", "image": "a"}]), "metadata": {"labels": {"x": "y"}}}
    assert not ps.is_significant_pod_update(new, old)
    new["spec"]["initContainers"][0]["image"] = "b"
    assert ps.is_significant_pod_update(new, old)
    eph = {"spec": dict(old["spec"], ephemeralContainers=[{"name": "d", "image": "x"}])}
    assert ps.is_significant_pod_update(eph, old) and not ps.is_significant_pod_update(eph, eph)


def test_warning_headers_are_escaped_deduplicated_and_bounded():
    assert warning_header_values(['a "b" \\', 'a "b" \\', "bad\x07", ""]) == [b'299 - "a \\"b\\" \\\\"']
    many = [f"{i} " + "x" * 1000 for i in range(10)]
    values = warning_header_values(many)
    assert len(values) == 10 and all(len(v) == len('299 - ""') + WARNING_ITEM_RUNES for v in values)


def test_restricted_volume_types_are_named_as_upstream_names_them():
    # Upstream's check_restrictedVolumes_test.go case, as JSON (its source-less "c1" is an unknown
    # source here: kedge, like Kubernetes' defaulting, reads a volume without a source as emptyDir).
    allowed = ["emptyDir", "secret", "persistentVolumeClaim", "downwardAPI", "configMap", "projected", "csi",
               "ephemeral", "image"]
    restricted = ["hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs",
                  "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte",
                  "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos"]
    volumes = [{"name": f"a{i}", key: {}} for i, key in enumerate(allowed, 1)]
    volumes += [{"name": f"b{i}", key: {}} for i, key in enumerate(restricted, 1)]
    volumes += [{"name": "c1", "someFutureVolume": {}}, {"name": "d1"}]
    r = ps.evaluate_pod(lv("restricted"), {}, spec(volumes=volumes))
    assert next(v for v in r.violations if v.reason == "restricted volume types") == ps.Violation(
        "restricted volume types", (
        'volumes "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10", "b11", "b12", "b13", "b14", "b15", '
        '"b16", "b17", "b18", "b19", "b20", "b21", "c1" use restricted volume types "awsElasticBlockStore", '
        '"azureDisk", "azureFile", "cephfs", "cinder", "fc", "flexVolume", "flocker", "gcePersistentDisk", '
        '"gitRepo", "glusterfs", "hostPath", "iscsi", "nfs", "photonPersistentDisk", "portworxVolume", "quobyte", '
        '"rbd", "scaleIO", "storageos", "unknown", "vsphereVolume"'))


def test_apparmor_annotations_are_named_as_upstream_names_them():
    prefix = "container.apparmor.security.beta.kubernetes.io/"
    meta = {"annotations": {prefix: "bogus", prefix + "a": "", prefix + "b": "runtime/default",
                            prefix + "c": "localhost/", prefix + "d": "localhost/foo", prefix + "e": "unconfined",
                            prefix + "f": "unknown"}}
    r = ps.evaluate_pod(lv("baseline"), meta, spec())
    assert r.violations == (ps.Violation("forbidden AppArmor profiles", (
        'annotations must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/="bogus"", '
        '"container.apparmor.security.beta.kubernetes.io/e="unconfined"", '
        '"container.apparmor.security.beta.kubernetes.io/f="unknown""')),)
