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


# -- fuzzing regressions: LabelSelector structs from client-written objects ----------

@pytest.mark.parametrize("struct", [
    {"matchLabels": [1]},                                                    # AttributeError before
    {"matchLabels": "a=b"},
    {"matchLabels": 0},
    {"matchExpressions": 5},                                                 # TypeError before
    {"matchExpressions": {"key": "a", "operator": "Exists"}},
    {"matchExpressions": [{"operator": []}]},                                # unhashable operator
    {"matchExpressions": [{"key": "a", "operator": {"In": 1}, "values": ["x"]}]},
    {"matchExpressions": [{"key": "a", "operator": "Exists", "values": 1}]},  # the fuzzer's crash
    {"matchExpressions": [{"key": "a", "operator": "In", "values": "xy"}]},  # was read as ["x", "y"]
    {"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]},
    {"matchExpressions": [{"key": 5, "operator": "Exists"}]},
    {"matchExpressions": [{"operator": "Exists"}]},
    {"matchExpressions": ["a"]},
    {"matchLabels": {"a": 1}},                                               # was stringified to "1"
    {"matchLabels": {"a": {"b": 1}}},
    {"matchLabels": {"a": None}},
    {"matchLabels": {"a": "x" * 64}},
    {"matchLabels": {"a\n": "b"}},                                           # "$" matched before "\n"
    {"matchLabels": {"a": "b\n"}},
    {"matchLabels": {"Example.com/a": "b"}},                                 # prefix is a DNS subdomain
    {"matchLabels": {"a/b/c": "d"}},
    {"matchLabels": {"x" * 254 + "/a": "b"}},
    {"matchLabels": {f"k{i}": "v" for i in range(65)}},
    [],
    "matchLabels",
])
def test_malformed_label_selector_struct_is_a_selector_error(struct):
    with pytest.raises(SelectorError) as err:
        selector_from_struct(struct)
    assert err.value.code == "invalid_selector"


@pytest.mark.parametrize("struct,labels,match", [
    ({}, {"x": "y"}, True),
    ({"matchLabels": None, "matchExpressions": None}, {}, True),
    ({"matchLabels": {"app.kubernetes.io/name": "web"}}, {"app.kubernetes.io/name": "web"}, True),
    ({"matchLabels": {"a" * 63: ""}}, {"a" * 63: ""}, True),
    ({"matchLabels": {"a." * 126 + "a/" + "B_c": "v"}}, {"a." * 126 + "a/" + "B_c": "v"}, True),
    ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["x"]}]}, {"t": "x"}, False),
    ({"matchExpressions": [{"key": "t", "operator": "Exists", "values": None}]}, {"t": ""}, True),
])
def test_valid_label_selector_structs_match_like_kubernetes(struct, labels, match):
    assert selector_from_struct(struct).matches(labels) is match


@pytest.mark.parametrize("text", ["Example.com/a=b", "a/b/c", "a/=b", "-a", "a" * 64 + "=b", "x_y/a=b"])
def test_label_selector_text_keys_are_qualified_names(text):
    with pytest.raises(SelectorError):
        parse_label_selector(text)
