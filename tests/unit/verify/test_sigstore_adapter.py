"""sigstore-python's private members that kedge uses still exist and still behave.

kedge/verify/_sigstore_adapter.py is the only module allowed to touch them; these
tests fail with the member's name when a sigstore-python upgrade moves or
changes one, and the source scan keeps new private accesses out of the rest of
the tree.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from sigstore.verify.policy import Identity

from kedge.verify import _sigstore_adapter, bundles, trust

REPO = Path(__file__).resolve().parents[3]
CONF = REPO / "tests" / "interop" / "conformance"
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)


@pytest.mark.parametrize(
    ("module", "dotted", "params"), _sigstore_adapter.PRIVATE_MEMBERS, ids=[m[1] for m in _sigstore_adapter.PRIVATE_MEMBERS]
)
def test_private_sigstore_member_is_still_there(module: str, dotted: str, params: tuple[str, ...] | None) -> None:
    problem = _sigstore_adapter.member_problem(module, dotted, params)
    assert problem is None, (
        f"{problem}. kedge/verify/_sigstore_adapter.py relies on it: re-read sigstore-python's source "
        "for the new version, adapt the adapter, then widen the pin in pyproject.toml"
    )


def test_a_changed_member_is_named() -> None:
    problem = _sigstore_adapter.member_problem("sigstore.models", "TransparencyLogEntry._no_such_member", ("self",))
    assert problem is not None and "sigstore.models.TransparencyLogEntry._no_such_member" in problem
    problem = _sigstore_adapter.member_problem("sigstore.models", "TransparencyLogEntry._verify", ("self", "other"))
    assert problem is not None and "takes ('self', 'keyring')" in problem


def _pinned_sigstore() -> SpecifierSet:
    text = (REPO / "pyproject.toml").read_text()
    m = re.search(r'"sigstore([<>=!~][^";]*)"', text)
    assert m, "pyproject.toml must declare sigstore with a version range"
    return SpecifierSet(m.group(1))


def test_installed_sigstore_is_the_pinned_minor_version() -> None:
    spec = _pinned_sigstore()
    installed = Version(importlib.metadata.version("sigstore"))
    assert installed in spec, f"sigstore {installed} is outside the pin {spec} the adapter was checked against"
    # The pin admits one minor version: private members may change in any other.
    assert Version(f"{installed.major}.{installed.minor + 1}") not in spec


def test_closed_tsa_window_is_what_sigstore_python_calls() -> None:
    """The override must still be on sigstore-python's path: a timestamp at validFor.end passes."""
    d = CONF / "trust-root-tsa-validity-end-inclusive"
    doc = bundles.load_documents((d / "bundle.sigstore.json").read_bytes())[0]
    root = trust.load_trusted_root(d / "trusted_root.json")
    digest = hashlib.sha256((CONF / "a.txt").read_bytes()).digest()
    policy = Identity(identity=BEACON, issuer="https://token.actions.githubusercontent.com")
    if bundles.is_dsse_bundle(doc):
        bundles.verify_bundle_dsse(doc, root, policy)
    else:
        bundles.verify_bundle_artifact(doc, digest, root, policy)


_PRIVATE = re.compile(r"sigstore\._internal|\._inner\b|_dsse_envelope|_verify_signed_timestamp")


def test_no_private_sigstore_access_outside_the_adapter() -> None:
    offenders = []
    for path in sorted((REPO / "kedge").rglob("*.py")):
        if path.name == "_sigstore_adapter.py":
            continue
        text = path.read_text()
        for lineno, line in enumerate(text.splitlines(), 1):
            if _PRIVATE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
        for node in ast.walk(ast.parse(text)):
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            for name in ([mod] if mod else []) + names:
                if name and name.startswith("sigstore") and any(p.startswith("_") for p in name.split(".")):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {name}")
    assert not offenders, "private sigstore-python use outside kedge/verify/_sigstore_adapter.py:\n" + "\n".join(offenders)
