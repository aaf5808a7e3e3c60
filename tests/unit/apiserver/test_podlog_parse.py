"""``pods/NAME/log`` query handling against the stored pod (kube-apiserver's wording)."""

from __future__ import annotations

import pytest

from kedge.apiserver import podlog
from kedge.apiserver.status import ApiError

POD = {"metadata": {"name": "web", "namespace": "default"},
       "spec": {"nodeName": "edge-1", "containers": [{"name": "app"}]}}
TWO = {"metadata": {"name": "web", "namespace": "default"},
       "spec": {"nodeName": "edge-1", "containers": [{"name": "app"}, {"name": "side"}]}}


def test_defaults_pick_the_only_container_and_cap_the_size():
    lr = podlog.parse({}, POD)
    assert (lr.namespace, lr.pod, lr.node, lr.container) == ("default", "web", "edge-1", "app")
    assert lr.tail_lines is None and lr.limit_bytes == podlog.MAX_LOG_RESPONSE_BYTES
    assert not lr.previous and not lr.follow


def test_options_are_parsed():
    lr = podlog.parse({"container": "side", "tailLines": "10", "limitBytes": "100", "previous": "true",
                       "follow": "false"}, TWO)
    assert (lr.container, lr.tail_lines, lr.limit_bytes, lr.previous, lr.follow) == ("side", 10, 100, True, False)
    assert podlog.parse({"limitBytes": str(10**12)}, POD).limit_bytes == podlog.MAX_LOG_RESPONSE_BYTES


@pytest.mark.parametrize("query, pod, words", [
    ({}, TWO, "a container name must be specified for pod web, choose one of: [app side]"),
    ({"container": "nope"}, POD, "container nope is not valid for pod web"),
    ({}, {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app"}]}}, "does not have a host assigned"),
    ({"tailLines": "-1"}, POD, "tailLines"),
    ({"tailLines": "١٢"}, POD, "tailLines"),  # non-ASCII digits
    ({"limitBytes": "0"}, POD, "limitBytes"),
    ({"follow": "maybe"}, POD, "follow"),
    ({"timestamps": "true"}, POD, "timestamps is not supported"),
    ({"sinceSeconds": "10"}, POD, "sinceSeconds is not supported"),
    ({"sinceTime": "2026-01-01T00:00:00Z"}, POD, "sinceTime is not supported"),
])
def test_bad_queries_are_400_with_a_clear_message(query, pod, words):
    with pytest.raises(ApiError) as exc:
        podlog.parse(query, pod)
    assert exc.value.status == 400 and words in exc.value.message
