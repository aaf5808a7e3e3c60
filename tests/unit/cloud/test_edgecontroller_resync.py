"""plan.resync: what a node that reported its inventory and tombstones is sent."""

from __future__ import annotations

from kedge.cloud.edgecontroller import plan


def o(name: str, rv: str, **extra) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": rv}, **extra}


def ops(pushes) -> list[tuple[str, str, str]]:
    return [(p.operation, p.key, p.rv) for p in pushes]


def test_unknown_newer_and_unwanted_keys():
    desired = {"default/pod/a": o("a", "5"), "default/configmap/c": o("c", "9"), "default/pod/new": o("new", "3")}
    got = ops(plan.resync(desired, {"default/pod/a": "5", "default/configmap/c": "7", "default/pod/old": "2"}, {}))
    assert got == [("update", "default/configmap/c", "9"), ("insert", "default/pod/new", "3"),
                   ("delete", "default/pod/old", "2")]


def test_a_released_configmap_or_secret_needed_again_is_sent_at_the_same_version():
    desired = {"default/configmap/c": o("c", "5"), "default/secret/s": o("s", "6"), "default/pod/p": o("p", "7")}
    tomb = {"default/configmap/c": "5", "default/secret/s": "6", "default/pod/p": "7"}
    # The pod's tombstone at its own rv is left alone: a pod is never revived at the same version.
    assert ops(plan.resync(desired, {}, tomb)) == [("insert", "default/configmap/c", "5"),
                                                   ("insert", "default/secret/s", "6")]
    # A tombstone newer than what the cloud has (a deletion the cloud's list has not seen yet) wins.
    assert ops(plan.resync({"default/configmap/c": o("c", "5")}, {}, {"default/configmap/c": "8"})) == []
