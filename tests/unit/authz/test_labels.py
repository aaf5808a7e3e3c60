"""Label/field selector parsing and matching."""

from __future__ import annotations

import pytest

from kedge.authz.labels import (
    SelectorError, fields_match, parse_field_selector, parse_label_selector, selector_from_struct,
)


@pytest.mark.parametrize("text,labels,match", [
    ("", {"a": "b"}, True),
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "c"}, False),
    ("a!=b", {}, True),
    ("a in (x, y)", {"a": "y"}, True),
    ("a notin (x,y)", {"a": "y"}, False),
    ("a", {}, False),
    ("!a", {}, True),
    ("app=web,tier in (fe),!legacy", {"app": "web", "tier": "fe"}, True),
    ("app=web,tier in (fe),!legacy", {"app": "web", "tier": "fe", "legacy": "1"}, False),
])
def test_label_selector(text, labels, match):
    assert parse_label_selector(text).matches(labels) is match


@pytest.mark.parametrize("bad", ["a=b=c=", "a in ()", "a in (x", "=b", "a=" + "x" * 70, "x" * 5000, ",,"])
def test_bad_label_selectors_are_refused(bad):
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_struct_selector():
    sel = selector_from_struct({"matchLabels": {"a": "b"}, "matchExpressions": [
        {"key": "c", "operator": "In", "values": ["1", "2"]}, {"key": "d", "operator": "DoesNotExist"}]})
    assert sel.matches({"a": "b", "c": "2"})
    assert not sel.matches({"a": "b", "c": "2", "d": ""})
    assert selector_from_struct(None) is None
    with pytest.raises(SelectorError):
        selector_from_struct({"matchExpressions": [{"key": "c", "operator": "In"}]})


def test_field_selector():
    reqs = parse_field_selector("spec.nodeName=n1,metadata.name!=x")
    obj = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}}
    assert fields_match(obj, reqs)
    assert not fields_match({"metadata": {"name": "x"}, "spec": {"nodeName": "n1"}}, reqs)
    with pytest.raises(SelectorError):
        parse_field_selector("spec.nodeName")
    with pytest.raises(SelectorError):
        parse_field_selector("bad field=1")
