"""Which uid/gid a pod runs as: range parsing, allocation and the checks on securityContext ids.

Pure decisions (kedge.edge.edged.ids); the processes that prove them are in
tests/integration/test_edged.py and tests/threat_model/test_pod_escape_attacks.py.
"""

from __future__ import annotations

import pytest

from kedge.edge.config import EdgeConfig
from kedge.edge.edged.ids import (DEFAULT_POD_UID_RANGE, MAX_POD_ID, MIN_POD_ID, IdRange, IdRefused, IdRequest,
                                  allocate, check_runtime, choose_ids, excluded_blocks, parse_id_range,
                                  passwd_ids, pod_request, subid_blocks)
from kedge.edge.edged.plan import CONFIG_ERROR, RUN_AS_REFUSED, RUNTIME_NEEDS_ROOT
from kedge.edge.edged.spec import parse_pod
from kedge.errors import ConfigError

RNG = IdRange(200000, 200009)


def pod(container=None, containers=None, **spec):
    c = {"name": "c", "image": "img", "command": ["/bin/true"]}
    c.update(container or {})
    return parse_pod({"metadata": {"uid": "u-1", "namespace": "ns", "name": "web"},
                      "spec": {"containers": containers or [c], **spec}})


# --- the range ------------------------------------------------------------------------


def test_default_range_parses_and_is_what_a_fresh_edge_config_holds():
    rng = parse_id_range(DEFAULT_POD_UID_RANGE)
    assert (rng.first, rng.last, rng.size) == (200000, 265535, 65536)
    cfg = EdgeConfig.from_dict({"node_name": "e", "certs": "https://c:1", "hub": "wss://h:2"})
    assert cfg.pod_uid_range == DEFAULT_POD_UID_RANGE
    assert 65534 not in rng and 0 not in rng and 1000 not in rng


@pytest.mark.parametrize("text", [
    "0-65535", "1000-60000", "65534-70000", "65535-70000",  # root, humans, nobody, (uid16_t)-1
    "200000-199999", f"200000-{MAX_POD_ID + 1}", "4294967294-4294967294",  # reversed, past signed 32 bit
    "200000", "200000-", "-200000", "200000--265535", "+200000-265535", "0200000-265535", "200000-265535 ",
    " 200000-265535", "200000-265535\n", "200000 - 265535", "200000:265535", "2e5-3e5", "0x30d40-0x40d3f",
    "２00000-265535", "\u0662" + "00000-265535", "", "12345678901-12345678902",
])
def test_bad_ranges_are_refused_at_config_load(text):
    with pytest.raises(ValueError):
        parse_id_range(text)
    with pytest.raises(ConfigError):
        EdgeConfig.from_dict({"node_name": "e", "certs": "https://c:1", "hub": "wss://h:2", "pod_uid_range": text})


@pytest.mark.parametrize("value", [200000, None, ["200000", "265535"], {"first": 1}, True])
def test_a_range_that_is_not_a_string_is_refused(value):
    with pytest.raises(ConfigError):
        EdgeConfig.from_dict({"node_name": "e", "certs": "https://c:1", "hub": "wss://h:2", "pod_uid_range": value})


def test_range_edges_are_inclusive():
    assert parse_id_range(f"{MIN_POD_ID}-{MIN_POD_ID}").size == 1
    assert parse_id_range(f"{MAX_POD_ID}-{MAX_POD_ID}").size == 1
    assert 200000 in RNG and 200009 in RNG and 199999 not in RNG and 200010 not in RNG
    assert True not in IdRange(1 + MIN_POD_ID - 1, MIN_POD_ID + 1)


# --- allocation -----------------------------------------------------------------------


def test_allocation_never_hands_out_a_held_id_and_wraps_after_the_last_given():
    assert allocate(RNG, set()) == 200000
    assert allocate(RNG, {200000, 200001}) == 200002
    assert allocate(RNG, set(), after=200004) == 200005  # not the lowest free: reuse is delayed
    assert allocate(RNG, {200009}, after=200008) == 200000  # wraps
    assert allocate(RNG, {200009, 200000}, after=200008) == 200001
    assert allocate(RNG, set(), after=12) == 200000  # a cursor outside the range is ignored
    assert allocate(RNG, set(range(200000, 200010))) is None
    assert allocate(RNG, set(range(200000, 200010)) - {200003}, after=200005) == 200003


def test_allocation_skips_local_accounts_and_subordinate_ranges():
    excluded = excluded_blocks({200000, 5}, [(200002, 200006), (100000, 165535)])
    assert allocate(RNG, set(), excluded=excluded) == 200001
    assert allocate(RNG, {200001}, excluded=excluded) == 200007
    assert allocate(RNG, set(range(200007, 200010)) | {200001}, excluded=excluded) is None
    assert allocate(RNG, set(), excluded=[(0, 2**31)]) is None


def test_every_id_of_the_range_is_given_once():
    rng = IdRange(300000, 300099)
    held: set[int] = set()
    last = None
    for _ in range(rng.size):
        last = allocate(rng, held, after=last)
        assert last is not None and last not in held and last in rng
        held.add(last)
    assert allocate(rng, held, after=last) is None


def test_account_files_parse_to_ids_and_blocks():
    passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:200003:200003::/home/alice:/bin/sh\n#junk\nbad:x:y:1\n"
    assert passwd_ids(passwd) == {0, 200003}
    assert subid_blocks("alice:100000:65536\nbob:200005:3\nbroken:1\nzero:5:0\n") == [(100000, 165535),
                                                                                      (200005, 200007)]


# --- what a pod may ask for -----------------------------------------------------------


@pytest.mark.parametrize("spec,expect", [
    ({}, IdRequest(None, None)),
    ({"container": {"securityContext": {"runAsUser": 200003}}}, IdRequest(200003, None)),
    ({"securityContext": {"runAsUser": 200003, "runAsGroup": 200004}}, IdRequest(200003, 200004)),
    ({"securityContext": {"fsGroup": 200005}}, IdRequest(None, 200005)),
    ({"securityContext": {"runAsGroup": 200005, "fsGroup": 200005}}, IdRequest(None, 200005)),
    ({"securityContext": {"runAsUser": 200003, "fsGroup": 200003}}, IdRequest(200003, None)),
    ({"securityContext": {"runAsNonRoot": True}}, IdRequest(None, None)),
    ({"securityContext": {"supplementalGroups": []}}, IdRequest(None, None)),
])
def test_ids_inside_the_range_are_what_the_pod_asks_for(spec, expect):
    assert pod_request(pod(**spec), RNG) == expect


@pytest.mark.parametrize("spec,words", [
    ({"container": {"securityContext": {"runAsUser": 0}}}, "root"),
    ({"securityContext": {"runAsGroup": 0}}, "root"),
    ({"container": {"securityContext": {"runAsGroup": 6}}}, "runAsGroup 6 is outside"),  # disk
    ({"securityContext": {"runAsGroup": 42}}, "runAsGroup 42 is outside"),  # shadow
    ({"securityContext": {"runAsUser": 65534}}, "runAsUser 65534 is outside"),  # nobody
    ({"securityContext": {"runAsUser": 1000}}, "outside this node's pod id range 200000-200009"),
    ({"securityContext": {"runAsUser": 200010}}, "outside"),
    ({"securityContext": {"fsGroup": 6}}, "fsGroup 6 is outside"),
    ({"securityContext": {"supplementalGroups": [200001]}}, "supplementalGroups"),
    ({"securityContext": {"supplementalGroups": [6]}}, "supplementalGroups"),
    ({"securityContext": {"runAsNonRoot": False}}, "runAsNonRoot: false"),
    ({"container": {"securityContext": {"runAsNonRoot": False}}}, "runAsNonRoot: false"),
    ({"securityContext": {"runAsUser": 200001, "fsGroup": 200002}}, "fsGroup 200002 differs"),
    ({"containers": [{"name": "a", "command": ["x"], "securityContext": {"runAsUser": 200001}},
                     {"name": "b", "command": ["x"], "securityContext": {"runAsUser": 200002}}]}, "one identity"),
    ({"containers": [{"name": "a", "command": ["x"], "securityContext": {"runAsUser": 200001}},
                     {"name": "b", "command": ["x"]}]}, "one identity"),
])
def test_ids_outside_the_range_root_and_extra_groups_are_refused_with_a_reason(spec, words):
    with pytest.raises(IdRefused) as exc:
        pod_request(pod(**spec), RNG)
    assert exc.value.reason == RUN_AS_REFUSED and words in str(exc.value)


def test_a_non_root_edgecore_runs_no_pod_and_says_why():
    check_runtime(0)
    for euid in (1, 1000, 65534, 200001):
        with pytest.raises(IdRefused) as exc:
            check_runtime(euid)
        assert exc.value.reason == RUNTIME_NEEDS_ROOT
        assert f"uid {euid}, not root" in str(exc.value)


# --- the identity a pod gets ----------------------------------------------------------


def test_a_pod_gets_a_fresh_id_keeps_it_and_never_shares_one():
    assert choose_ids(IdRequest(), None, set(), RNG) == (200000, 200000)
    assert choose_ids(IdRequest(), None, {200000, 200001}, RNG, after=200000) == (200002, 200002)
    assert choose_ids(IdRequest(), (200007, 200007), {200000}, RNG) == (200007, 200007)  # kept
    assert choose_ids(IdRequest(200004, 200005), None, set(), RNG) == (200004, 200005)
    # gid-only request: the fresh uid skips the group id (a gid is also someone's uid number)
    assert choose_ids(IdRequest(None, 200000), None, set(), RNG) == (200001, 200000)


@pytest.mark.parametrize("request_,current,others,reason", [
    (IdRequest(200003), None, {200003}, CONFIG_ERROR),  # another pod's uid: waits, never shared
    (IdRequest(None, 200003), None, {200003}, CONFIG_ERROR),  # another pod's group
    (IdRequest(200004, 200003), None, {200003}, CONFIG_ERROR),
    (IdRequest(), None, set(range(200000, 200010)), CONFIG_ERROR),  # range exhausted
    (IdRequest(200004), (200001, 200001), set(), RUN_AS_REFUSED),  # a pod's identity does not change
    (IdRequest(None, 200004), (200001, 200001), set(), RUN_AS_REFUSED),
])
def test_held_ids_and_identity_changes_are_refused(request_, current, others, reason):
    with pytest.raises(IdRefused) as exc:
        choose_ids(request_, current, others, RNG)
    assert exc.value.reason == reason


def test_a_requested_id_of_a_local_account_is_refused():
    excluded = [(200003, 200003)]
    with pytest.raises(IdRefused, match="local account"):
        choose_ids(IdRequest(200003), None, set(), RNG, excluded=excluded)
    with pytest.raises(IdRefused, match="local account"):
        choose_ids(IdRequest(200002, 200003), None, set(), RNG, excluded=excluded)
    assert choose_ids(IdRequest(), None, set(), RNG, after=200002, excluded=excluded) == (200004, 200004)
