"""Pod parsing (peer input) and what a container gets: env, volume files (its user: test_ids.py)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from kedge.edge.edged.content import ContainerConfigError, expand, resolve_env, volume_files
from kedge.edge.edged.spec import MAX_DIR_NAME, PodSpecError, parse_pod, pod_dir_name


def raw(container=None, volumes=None, **spec):
    c = {"name": "c", "image": "img", "command": ["/bin/true"]}
    c.update(container or {})
    return {"metadata": {"uid": "0b1c2d3e-aaaa-bbbb-cccc-1234567890ab", "namespace": "ns", "name": "web"},
            "spec": {"containers": [c], "volumes": volumes or [], **spec}}


OBJS = {
    ("configmap", "ns", "cfg"): {"data": {"A": "1", "B": "two", "bad key": "x", "conf.ini": "k=v"},
                                 "binaryData": {"blob": base64.b64encode(b"\x00\x01").decode()}},
    ("secret", "ns", "sec"): {"data": {"password": base64.b64encode(b"hunter2").decode(),
                                       "tls.key": base64.b64encode(b"KEY").decode()}},
}


def lookup(kind, ns, name):
    return OBJS.get((kind, ns, name))


@pytest.mark.parametrize("mutate", [
    lambda o: o["metadata"].update(uid="../../etc"),
    lambda o: o["metadata"].update(name="a_b"),
    lambda o: o["metadata"].update(namespace="../x"),
    lambda o: o["spec"].update(containers=[]),
    lambda o: o["spec"]["containers"].append(dict(o["spec"]["containers"][0])),
    lambda o: o["spec"].update(restartPolicy="Sometimes"),
    lambda o: o["spec"]["containers"][0].update(command="sh -c x"),
    lambda o: o["spec"]["containers"][0].update(command=["a\x00b"]),
    lambda o: o["spec"]["containers"][0].update(workingDir="../../root"),
    lambda o: o["spec"]["containers"][0].update(volumeMounts=[{"name": "nope", "mountPath": "/x"}]),
    lambda o: o["spec"]["containers"][0].update(args=["x"] * 5000),
    lambda o: o["spec"]["containers"][0].update(livenessProbe={"httpGet": {"port": 80, "path": "x y"}}),
    lambda o: o["spec"]["containers"][0].update(livenessProbe={"exec": {"command": ["x"]},
                                                               "tcpSocket": {"port": 1}}),
    lambda o: o["spec"].update(volumes=[{"name": "v", "hostPath": {"path": "/"}}]),
    lambda o: o["spec"].update(volumes=[{"name": "v", "secret": {"secretName": "s",
                                                                 "items": [{"key": "k", "path": "../k"}]}}]),
    lambda o: o["spec"].update(securityContext={"runAsUser": -1}),
    lambda o: o["spec"].update(terminationGracePeriodSeconds=True),
])
def test_malformed_or_hostile_pods_are_refused(mutate):
    obj = raw()
    mutate(obj)
    with pytest.raises(PodSpecError) as exc:
        parse_pod(obj)
    assert exc.value.code == "invalid_pod"


def test_parse_pod_fields():
    p = parse_pod(raw({"args": ["-x"], "workingDir": "sub/dir", "securityContext": {"runAsUser": 1000},
                       "ports": [{"name": "http", "containerPort": 8080}],
                       "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"},
                                          "periodSeconds": 2}},
                      terminationGracePeriodSeconds=5, securityContext={"runAsUser": 7, "runAsGroup": 8}))
    c = p.containers[0]
    assert p.dir_name == "ns_web_0b1c2d3e-aaaa-bbbb-cccc-1234567890ab"
    assert c.command == ("/bin/true",) and c.args == ("-x",) and c.working_dir == "sub/dir"
    assert (c.run_as_user, c.run_as_group) == (1000, 8)  # container overrides pod, group inherited
    assert c.readiness is not None and c.readiness.kind == "http" and c.readiness.period_s == 2
    assert c.port_number(c.readiness.port) == 8080
    assert p.grace_period_s == 5 and p.restart_policy == "Always"


def test_env_from_configmap_secret_fields_and_expansion():
    p = parse_pod(raw({
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [{"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
                {"name": "GREETING", "value": "hello $(B) $$(B) $(MISSING)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        volumes=[{"name": "data", "emptyDir": {}}]))
    env = resolve_env(p, p.containers[0], lookup, volume_paths={"data": "/pods/x/volumes/data"})
    assert env["PASS"] == "hunter2" and env["B"] == "two" and env["CFG_A"] == "1"
    assert "CFG_bad key" not in env
    assert env["GREETING"] == "hello two $(B) $(MISSING)"
    assert env["POD"] == "web" and "OPT" not in env
    assert env["KEDGE_VOLUME_DATA"] == "/pods/x/volumes/data"
    assert env["PATH"].startswith("/usr/local/sbin")


@pytest.mark.parametrize("env", [
    [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}}],
    [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey"}}}],
    [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "blob"}}}],  # not text
])
def test_missing_or_bad_references_are_config_errors(env):
    p = parse_pod(raw({"env": env}))
    with pytest.raises(ContainerConfigError) as exc:
        resolve_env(p, p.containers[0], lookup, volume_paths={})
    assert exc.value.reason == "CreateContainerConfigError"


def test_volume_files_modes_items_and_reserved_keys():
    p = parse_pod(raw(volumes=[
        {"name": "s", "secret": {"secretName": "sec"}},
        {"name": "c", "configMap": {"name": "cfg", "items": [{"key": "conf.ini", "path": "etc/app.ini",
                                                                "mode": 0o440}]}},
        {"name": "o", "configMap": {"name": "absent", "optional": True}},
        {"name": "e", "emptyDir": {}}]))
    s, c, o, e = p.volumes
    assert volume_files(p, s, lookup) == {"password": (b"hunter2", 0o400), "tls.key": (b"KEY", 0o400)}
    assert volume_files(p, c, lookup) == {"etc/app.ini": (b"k=v", 0o440)}
    assert volume_files(p, o, lookup) == {}
    assert volume_files(p, e, lookup) is None
    whole = parse_pod(raw(volumes=[{"name": "w", "configMap": {"name": "cfg"}}])).volumes[0]
    files = volume_files(p, whole, lookup)
    assert "bad key" not in files and files["blob"] == (b"\x00\x01", 0o444)


def test_expand_is_single_pass():
    assert expand("$(A)$(B)", {"A": "$(B)", "B": "x"}) == "$(B)x"


def test_security_context_ids_are_parsed_and_the_hash_of_pods_without_groups_is_unchanged():
    plain = parse_pod(raw({"securityContext": {"runAsUser": 200001}}))
    assert plain.fs_group is None and plain.supplemental_groups == ()
    c = plain.containers[0]
    assert (c.run_as_user, c.run_as_group, c.run_as_non_root) == (200001, None, None)
    # The hash input of a pod without fsGroup/supplementalGroups is what it was before they
    # were parsed: an upgraded edgecore does not restart its healthy pods.
    assert c.spec_hash == "6adabfc77597a129"  # as computed before this change
    grouped = parse_pod(raw({"securityContext": {"runAsUser": 200001}},
                            securityContext={"fsGroup": 200001, "supplementalGroups": [6, 42],
                                             "runAsNonRoot": False}))
    assert grouped.fs_group == 200001 and grouped.supplemental_groups == (6, 42)
    assert grouped.containers[0].run_as_non_root is False
    assert grouped.containers[0].spec_hash != c.spec_hash


@pytest.mark.parametrize("ctx", [{"fsGroup": -1}, {"fsGroup": "6"}, {"supplementalGroups": 6},
                                 {"supplementalGroups": [True]}, {"supplementalGroups": list(range(33))}])
def test_malformed_pod_groups_are_refused_at_parse(ctx):
    with pytest.raises(PodSpecError):
        parse_pod(raw(securityContext=ctx))


# --- pod directory names -------------------------------------------------------------------

LONGEST = ("n" * 63, "p" * 253, "u" * 64)  # what Kubernetes allows: 382 characters with separators


def test_pod_dir_name_is_bounded_for_the_longest_valid_pod():
    obj = raw()
    obj["metadata"].update(namespace=LONGEST[0], name=LONGEST[1], uid=LONGEST[2])
    name = parse_pod(obj).dir_name
    assert len(name.encode()) <= MAX_DIR_NAME < 255  # a file name's bound, with room to spare
    assert name.startswith(f"{LONGEST[0]}_ppp") and name.endswith(f"_{LONGEST[2]}")
    assert re.fullmatch(r"[a-z0-9-]+_[a-z0-9.-]+~[0-9a-f]{32}_[A-Za-z0-9-]+", name)


def test_pod_dir_names_within_the_bound_are_unchanged_so_running_pods_are_readopted():
    assert pod_dir_name("ns", "web", "uid-1") == "ns_web_uid-1"
    full = f"ns_{'a' * (MAX_DIR_NAME - 9)}_uid-1"
    assert len(full) == MAX_DIR_NAME and pod_dir_name("ns", "a" * (MAX_DIR_NAME - 9), "uid-1") == full
    assert "~" in pod_dir_name("ns", "a" * (MAX_DIR_NAME - 8), "uid-1")  # one more: shortened
    assert len(pod_dir_name("ns", "a" * (MAX_DIR_NAME - 8), "uid-1")) <= MAX_DIR_NAME


@pytest.mark.parametrize("a,b", [
    (("ns", "p" * 253, "u1"), ("ns", "p" * 253, "u2")),  # same long name, other pod
    (("ns", "p" * 252 + "q", "u1"), ("ns", "p" * 252 + "r", "u1")),  # differ past the kept prefix
    (("n1", "p" * 253, "u"), ("n2", "p" * 253, "u")),
    (("ns", "p" * 253, "u"), ("ns", "p" * 199, "u")),  # long vs within the bound
])
def test_pod_dir_names_are_unique(a, b):
    assert pod_dir_name(*a) != pod_dir_name(*b)


def test_a_shortened_name_never_equals_a_pods_full_name():
    short = pod_dir_name(*LONGEST)
    ns, rest = short.split("_", 1)
    name, uid = rest.rsplit("_", 1)
    assert "~" in name  # no pod name holds '~' (parse_pod refuses it)
    obj = raw()
    obj["metadata"].update(namespace=ns, name=name, uid=uid)
    with pytest.raises(PodSpecError):
        parse_pod(obj)


def test_pod_dir_name_is_stable():
    assert pod_dir_name(*LONGEST) == pod_dir_name(*LONGEST)
    # Pinned: a changed digest would orphan the directories (and processes) of running pods.
    assert pod_dir_name("default", "x" * 253, "uid-1").endswith("~" + hashlib.sha256(
        f"default/{'x' * 253}/uid-1".encode()).hexdigest()[:32] + "_uid-1")
