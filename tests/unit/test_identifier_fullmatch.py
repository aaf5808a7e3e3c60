"""Every identifier validator refuses a valid identifier with a control character or blank around it.

Red-team finding 6: ``re.match(r"^...$", s)`` accepts ``"p\\n"`` (``$`` also matches before
a final newline), so a pod named ``p\\n`` got into the store and then stalled its node's
sync. Each row is one validator of kedge (as the code calls it) and a value it accepts;
every mutation of that value below must be refused.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kedge.apiserver import resources
from kedge.authz import labels
from kedge.authz.bootstrap import CLOUDCORE_GROUP, authorize_node_impersonation
from kedge.authz.rbac import Attributes, Verdict
from kedge.edge import podlogs
from kedge.edge.devicetwin import model as twin
from kedge.edge.edged import content, manager, runtime, spec
from kedge.edge.metamanager import decide
from kedge.manifests import generate as manifests
from kedge.pki import ca, tokens
from kedge.protocol import message as m
from kedge.verify import api as verify_api
from kedge.verify import policy

MUTATIONS = ["{}\n", "{}\r", "{}\r\n", "{}\x00", "{}\t", " {}", "{} ", "\n{}", "{}\u2028", "{}\x85"]


def ok(fn: Callable[[str], object]) -> Callable[[str], bool]:
    """A validator that raises on refusal (or returns something falsy) as a predicate."""
    def check(s: str) -> bool:
        try:
            return bool(fn(s))
        except Exception:  # noqa: BLE001 - any refusal counts
            return False
    return check


def _rt(resource: str) -> resources.ResourceType:
    return next(rt for rt in resources.BUILTIN if rt.resource == resource)


def _impersonate_node(s: str) -> bool:
    attrs = Attributes(user="cloudcore", groups=(CLOUDCORE_GROUP,), verb="impersonate", resource="users",
                       name="system:node:" + s)
    return authorize_node_impersonation(attrs).verdict is Verdict.ALLOW


VALIDATORS: list[tuple[str, Callable[[str], bool], str]] = [
    # API server: object names, namespaces, CRD names, labels, selectors.
    ("apiserver pod name (RFC 1123 subdomain)", lambda s: _rt("pods").valid_name(s), "web-0.a"),
    ("apiserver namespace name (RFC 1123 label)", lambda s: _rt("namespaces").valid_name(s), "team-a"),
    ("apiserver CRD group/plural/kind/version", ok(lambda s: resources.from_crd({
        "metadata": {"name": f"widgets.{s}"}, "spec": {"group": s, "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True}]}})), "example.com"),
    ("apiserver CRD kind", ok(lambda s: resources.from_crd({
        "metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": s},
        "versions": [{"name": "v1", "served": True, "storage": True}]}})), "Widget"),
    ("apiserver CRD version", ok(lambda s: resources.from_crd({
        "metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": s, "served": True, "storage": True}]}})), "v1beta2"),
    ("label key / annotation key", ok(labels._check_key), "example.com/app"),
    ("label value", ok(labels._check_value), "web"),
    ("node impersonation name", _impersonate_node, "edge-1"),
    # Tunnel protocol: resource strings and node names.
    ("protocol resource", ok(m.Resource.parse), "default/pod/web-0"),
    ("protocol node resource", ok(m.NodeResource.parse), "node/edge-1/default/pod/web-0"),
    ("protocol error code", ok(m.validate_error_code), "not_found"),
    # PKI and bootstrap tokens.
    ("node name (certificate CN)", ok(ca.validate_node_name), "edge-1"),
    ("bootstrap token", ok(tokens.parse_token), "a" * 64 + ".abcdef." + "A" * 43),
    ("bootstrap token id", ok(tokens.is_token_id), "abcdef"),
    # Edge: devices, pods, logs, metamanager.
    ("device namespace", ok(twin.check_namespace), "default"),
    ("device name", ok(twin.check_name), "thermo-1"),
    ("device property name", ok(twin.check_property_name), "temperature_c"),
    ("edged DNS label", lambda s: bool(spec._DNS_LABEL.match(s)), "web"),
    ("edged DNS subdomain", lambda s: bool(spec._DNS_SUBDOMAIN.match(s)), "web.a"),
    ("edged pod uid", lambda s: bool(spec._UID.match(s)), "0f6c-11aa"),
    ("edged env name", lambda s: bool(spec._ENV_NAME.match(s)), "GREETING"),
    ("edged configmap key", lambda s: bool(spec._KEY.match(s)), "app.conf"),
    ("edged probe header name", lambda s: bool(spec._HEADER_NAME.match(s)), "X-Probe"),
    ("edged envFrom key", lambda s: bool(content._ENV_KEY.match(s)), "GREETING"),
    ("edged volume file key", lambda s: bool(content._FILE_KEY.match(s)), "app.conf"),
    ("edged pod directory name", lambda s: bool(manager._DIR_NAME.match(s)), "default_web-0_0f6c"),
    ("edged shell variable name", lambda s: bool(runtime._SH_NAME.match(s)), "GREETING"),
    ("pod log container name", lambda s: bool(podlogs._DNS_LABEL.fullmatch(s)), "web"),
    ("metamanager resourceVersion", ok(decide.parse_rv), "42"),
    # CLI arguments and release verification.
    ("kedge verify sha256: argument", ok(verify_api.artifact_digest), "sha256:" + "ab" * 32),
    ("verify semver tag", lambda s: bool(policy._SEMVER.fullmatch(s)), "v1.2.3"),
    ("verify sha256 hex", lambda s: bool(policy._SHA256_HEX.fullmatch(s)), "ab" * 32),
    ("manifests namespace", lambda s: bool(manifests._DNS1123_LABEL.fullmatch(s)), "kedge"),
]


@pytest.mark.parametrize(("validator", "valid"), [(v, ok_) for _, v, ok_ in VALIDATORS],
                         ids=[name for name, _, _ in VALIDATORS])
def test_validator_accepts_the_plain_identifier(validator, valid):
    assert validator(valid)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[repr(x) for x in MUTATIONS])
@pytest.mark.parametrize(("validator", "valid"), [(v, ok_) for _, v, ok_ in VALIDATORS],
                         ids=[name for name, _, _ in VALIDATORS])
def test_validator_refuses_control_characters_and_blanks(validator, valid, mutation):
    assert not validator(mutation.format(valid))


def test_invalid_pod_name_message_is_kubernetes_own():
    msg = _rt("pods").name_error("p\n")
    assert msg.startswith('metadata.name: Invalid value: "p\\n": a lowercase RFC 1123 subdomain must consist of')
    assert "\n" not in msg
    assert "RFC 1123 label" in _rt("namespaces").name_error("A")


@pytest.mark.parametrize("selector", ["app=we\nb", "a\npp=web", "app in (we\nb)", "app in (web)\nx",
                                      "app=we\x00b", "app=we\rb", "app=w\u2028b"])
def test_label_selector_refuses_control_characters_inside_a_term(selector):
    with pytest.raises(labels.SelectorError):
        labels.parse_label_selector(selector)


@pytest.mark.parametrize("selector", ["metadata.na\nme=x", "meta\x00data.name=x", "metadata.name\x00=x"])
def test_field_selector_refuses_control_characters_in_the_field(selector):
    with pytest.raises(labels.SelectorError):
        labels.parse_field_selector(selector)


def test_selectors_strip_blanks_around_terms_as_kubernetes_does():
    """Kubernetes' selector lexer skips blanks (space, tab, CR, LF) between tokens."""
    assert labels.parse_label_selector("app=web\n") == labels.parse_label_selector("app=web")
    assert labels.parse_label_selector(" app in (web) ") == labels.parse_label_selector("app in (web)")
