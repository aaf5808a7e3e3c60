"""The in-toto root layout kedge signs: steps, functionary, artifact flow rules."""

import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ec

from kedge.release import intoto

W, S, B = "kedge-0.1.0-py3-none-any.whl", "kedge-0.1.0.tar.gz", "kedge-0.1.0.cdx.json"
EXPIRES = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def test_layout_authorises_only_the_functionary_for_each_step():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    layout = intoto.make_layout(key, W, S, B, expires=EXPIRES)
    keyid = intoto.keyid_of(key)
    assert list(layout.keys) == [keyid]
    assert [s.name for s in layout.steps] == list(intoto.STEP_NAMES)
    assert all(s.pubkeys == [keyid] and s.threshold == 1 for s in layout.steps)
    assert layout.expires == "2030-01-01T00:00:00Z"


def test_artifact_flow_rules_close_every_gap():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    layout = intoto.make_layout(key, W, S, B, expires=EXPIRES)
    steps = {s.name: s for s in layout.steps}
    # Each step ends with DISALLOW *: nothing unexpected may appear or be consumed.
    for step in steps.values():
        assert step.expected_materials[-1] == ["DISALLOW", "*"]
        assert step.expected_products[-1] == ["DISALLOW", "*"]
    assert ["MATCH", "*", "WITH", "PRODUCTS", "FROM", "checkout"] in steps["build"].expected_materials
    assert ["MATCH", W, "WITH", "PRODUCTS", "FROM", "build"] in steps["sbom"].expected_materials
    (inspection,) = layout.inspect
    rules = inspection.expected_materials
    # Final artifacts must be the steps' products: MATCH, then DISALLOW what is left.
    for name, step in ((W, "build"), (S, "build"), (B, "sbom")):
        match = rules.index(["MATCH", name, "WITH", "PRODUCTS", "FROM", step])
        assert ["REQUIRE", name] in rules
        assert rules.index(["DISALLOW", name]) > match
    assert rules[-1] == ["ALLOW", "*"]
