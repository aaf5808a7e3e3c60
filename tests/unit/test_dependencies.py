"""What kedge imports is what it declares, and what it declares it uses.

Every third-party module imported anywhere under ``kedge/`` must come from a
distribution named in pyproject.toml's ``dependencies`` or ``cloud`` extra (a
transitive install is not a declaration: it can vanish with an upgrade of the
package that brought it); what the edge imports must be in ``dependencies``
(an edge installs no extras); every declared runtime dependency must be imported
somewhere (a declared, unused package is attack surface for nothing); and the
installed set must satisfy every requirement (``pip check``).
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
KEDGE = REPO / "kedge"
#: The code an edge node runs; it installs ``dependencies`` only.
EDGE_DIRS = ("edge", "protocol", "mapper")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    cloud = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["cloud"]}
    return base, cloud


def _third_party_imports(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level imported module -> files importing it (stdlib and kedge left out)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "kedge":
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _distributions(module: str) -> set[str]:
    return {canonicalize_name(d) for d in importlib.metadata.packages_distributions().get(module, [])}


def test_every_imported_module_is_a_declared_dependency() -> None:
    base, cloud = _declared()
    problems = []
    for module, files in sorted(_third_party_imports(sorted(KEDGE.rglob("*.py"))).items()):
        dists = _distributions(module)
        if not dists:
            problems.append(f"{module}: no installed distribution provides it ({sorted(files)[0]})")
        elif not dists & (base | cloud):
            problems.append(f"{module} (from {sorted(dists)}) is imported by {sorted(files)} but not declared")
    assert not problems, "\n".join(problems)


def test_the_edge_imports_only_base_dependencies() -> None:
    base, _cloud = _declared()
    paths = [p for d in EDGE_DIRS if (KEDGE / d).is_dir() for p in sorted((KEDGE / d).rglob("*.py"))]
    assert paths
    problems = [
        f"{module} is imported by {sorted(files)} but is not in [project] dependencies"
        for module, files in sorted(_third_party_imports(paths).items())
        if not _distributions(module) & base
    ]
    assert not problems, "\n".join(problems)


def test_every_declared_runtime_dependency_is_imported() -> None:
    base, cloud = _declared()
    imported = set()
    for module in _third_party_imports(sorted(KEDGE.rglob("*.py"))):
        imported |= _distributions(module)
    unused = sorted((base | cloud) - imported)
    assert not unused, f"declared in pyproject.toml but never imported by kedge/: {unused}"


def test_pip_check_is_clean() -> None:
    done = subprocess.run(  # nosec B603 - fixed interpreter and arguments
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
