"""PodManager parses each version of a pod once, and any changed object again."""

from __future__ import annotations

import asyncio

from kedge.edge.edged.manager import PodManager
from kedge.edge.edged.runtime import ProcessRuntime

UID = "0b1c2d3e-aaaa-bbbb-cccc-1234567890ab"


def pod(rv, grace=30, image="img"):
    # No command: the process runtime records NoCommand and starts nothing.
    return {"metadata": {"uid": UID, "namespace": "ns", "name": "web", "resourceVersion": rv},
            "spec": {"terminationGracePeriodSeconds": grace, "containers": [{"name": "c", "image": image}]}}


def test_an_unchanged_pod_is_not_parsed_again_and_any_change_is(tmp_path):
    async def main():
        mgr = PodManager(tmp_path / "pods", runtime=ProcessRuntime(no_new_privs=False), lookup=lambda *a: None,
                         on_status=lambda *a: None)
        await mgr.sync([pod("1", grace=30)])
        first = mgr._desired[UID]
        assert first.grace_period_s == 30
        await mgr.sync([pod("1", grace=30)])
        assert mgr._desired[UID] is first  # equal object: not parsed again
        await mgr.sync([pod("2", grace=5, image="img2")])
        assert mgr._desired[UID].grace_period_s == 5
        assert mgr._desired[UID].containers[0].image == "img2"
        # Same resourceVersion, different content (never from the store, but nothing is assumed).
        await mgr.sync([pod("2", grace=7, image="img2")])
        assert mgr._desired[UID].grace_period_s == 7
        # An object changed in place after it was handed over is seen as changed.
        obj = pod("3", grace=9)
        await mgr.sync([obj])
        obj["spec"]["terminationGracePeriodSeconds"] = 11
        await mgr.sync([obj])
        assert mgr._desired[UID].grace_period_s == 11
        await mgr.sync([])
        assert mgr._desired == {} and mgr._parsed == {}
        await mgr.shutdown(stop_pods=True)

    asyncio.run(main())
