"""CycloneDX SBOM: deterministic, valid against the CycloneDX schema, complete against installed metadata."""

import importlib.metadata
import json

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from kedge.errors import ConfigError, StateError
from kedge.release import sbom

ROOT_SHA = "cd" * 32


def _bom(components, **kw):
    root = sbom.Component("kedge", "0.1.0", depends_on=tuple(sbom.canonical_name(c.name) for c in components))
    bom = sbom.make_bom(root, ROOT_SHA, components, timestamp=kw.get("timestamp", 1_700_000_000), tool_version="0.1.0")
    return json.loads(sbom.dump(bom))


def _schema_errors(data: bytes):
    assert sbom.SPEC_VERSION == "1.5"
    return JsonStrictValidator(SchemaVersion.V1_5).validate_str(data.decode("ascii"), all_errors=True)


def test_bom_is_cyclonedx_1_5_and_reproducible():
    comps = [sbom.Component("PyYAML", "6.0.2", license_expression="MIT"),
             sbom.Component("cryptography", "44.0.0", depends_on=("cffi",)),
             sbom.Component("cffi", "1.17.1", license_name="MIT")]
    a, b = _bom(comps), _bom(list(reversed(comps)))
    assert a == b
    assert a["bomFormat"] == "CycloneDX" and a["specVersion"] == "1.5" and a["version"] == 1
    assert a["serialNumber"].startswith("urn:uuid:")
    assert a["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    assert a["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": ROOT_SHA}]
    assert [c["purl"] for c in a["components"]] == [
        "pkg:pypi/cffi@1.17.1", "pkg:pypi/cryptography@44.0.0", "pkg:pypi/pyyaml@6.0.2"]
    deps = {d["ref"]: d.get("dependsOn", []) for d in a["dependencies"]}
    assert deps["pkg:pypi/cryptography@44.0.0"] == ["pkg:pypi/cffi@1.17.1"]
    assert len(deps["pkg:pypi/kedge@0.1.0"]) == 3


def test_serial_number_changes_with_content():
    one = _bom([sbom.Component("h11", "0.14.0")])
    two = _bom([sbom.Component("h11", "0.16.0")])
    assert one["serialNumber"] != two["serialNumber"]


def test_dependency_on_unlisted_component_is_refused():
    with pytest.raises(ConfigError):
        _bom([sbom.Component("cryptography", "44.0.0", depends_on=("cffi",))])


@pytest.mark.parametrize("kw", [{"name": "bad name", "version": "1"}, {"name": "x", "version": "1 2"},
                                {"name": "x", "version": "1", "scope": "excluded"}])
def test_bad_components_are_refused(kw):
    with pytest.raises(ConfigError):
        sbom.Component(**kw)


def test_resolve_runtime_walks_installed_metadata_transitively():
    direct, comps = sbom.resolve_runtime(["cryptography>=42", "pytest>=8; extra == 'test'"], ())
    names = {c.name: c for c in comps}
    assert direct == ("cryptography",)
    assert "cffi" in names["cryptography"].depends_on and "cffi" in names  # transitive
    assert "pytest" not in names  # the 'test' extra was not asked for
    assert all(c.scope == "required" for c in comps)


def test_optional_extra_components_are_marked_optional():
    _direct, comps = sbom.resolve_runtime(["h11>=0.14", "in-toto>=3; extra == 'cloud'"], ("cloud",))
    scopes = {c.name: c.scope for c in comps}
    assert scopes["h11"] == "required" and scopes["in-toto"] == "optional"


def test_missing_dependency_fails_instead_of_leaving_a_hole():
    with pytest.raises(StateError):
        sbom.resolve_runtime(["surely-not-installed-kedge-dep>=1"], ())


def test_bom_serialises_as_ascii_json():
    doc = _bom([sbom.Component("h11", "0.14.0")])
    assert doc["components"][0]["scope"] == "required"


def _dump(components, timestamp=1_700_000_000):
    root = sbom.Component("kedge", "0.1.0", depends_on=tuple(sbom.canonical_name(c.name) for c in components))
    return sbom.dump(sbom.make_bom(root, ROOT_SHA, components, timestamp=timestamp, tool_version="0.1.0"))


def test_bom_validates_against_the_cyclonedx_schema():
    data = _dump([sbom.Component("PyYAML", "6.0.2", license_expression="MIT"),
                  sbom.Component("cryptography", "44.0.0", depends_on=("cffi",),
                                 license_expression="Apache-2.0 OR BSD-3-Clause"),
                  sbom.Component("cffi", "1.17.1", license_name="MIT License", scope="optional")])
    errors = list(_schema_errors(data) or [])
    assert not errors, [str(e) for e in errors]


def test_the_release_sbom_of_the_installed_kedge_validates_and_is_reproducible():
    """What `kedge release build` writes: kedge's own requirements, cloud extra included."""
    requires = importlib.metadata.distribution("kedge").requires or []
    direct, comps = sbom.resolve_runtime(requires, ("cloud",))
    assert {"cryptography", "sigstore", "cyclonedx-python-lib"} <= {c.name for c in comps}
    root = sbom.Component("kedge", "0.1.0", depends_on=direct)
    one = sbom.dump(sbom.make_bom(root, ROOT_SHA, comps, timestamp=1_700_000_000, tool_version="0.1.0"))
    two = sbom.dump(sbom.make_bom(root, ROOT_SHA, list(reversed(comps)), timestamp=1_700_000_000, tool_version="0.1.0"))
    assert one == two
    errors = list(_schema_errors(one) or [])
    assert not errors, [str(e) for e in errors]


def test_a_broken_sbom_fails_schema_validation():
    """The validator is live: a document the schema forbids is reported."""
    doc = json.loads(_dump([sbom.Component("h11", "0.14.0")]))
    doc["components"][0]["scope"] = "sometimes"
    errors = list(_schema_errors(json.dumps(doc).encode()) or [])
    assert errors


def test_timestamp_and_serial_follow_source_date_epoch():
    one, two = json.loads(_dump([], 1_700_000_000)), json.loads(_dump([], 1_700_000_001))
    assert one["metadata"]["timestamp"] != two["metadata"]["timestamp"]
    assert one["serialNumber"] != two["serialNumber"]
    assert one == json.loads(_dump([], 1_700_000_000))
