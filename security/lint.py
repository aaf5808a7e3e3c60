"""kedge's own AST lint: the hardening rules bandit does not know about.

Usage::

    python security/lint.py [PATH ...]        (default: kedge)

Rules (each finding prints ``path:line:col: CODE message``; exit 1 if any):

KL001  TLS verification disabled (``ssl.CERT_NONE``, ``check_hostname = False``,
       ``verify=False``, ``_create_unverified_context``) outside a function named
       ``unsafe_*`` in ``kedge/tls.py``.
KL002  ``ssl.SSLContext(...)`` / ``create_default_context(...)`` outside ``kedge/tls.py``
       (the one place that builds TLS contexts).
KL003  ``sys.exit`` / ``os._exit`` outside ``kedge/cli/``, ``__main__.py`` modules and
       ``if __name__ == "__main__":`` blocks (only entry points end the process).
KL004  ``pickle`` / ``marshal`` / ``shelve`` imported anywhere; ``yaml.load``/``load_all``
       without ``SafeLoader``/``CSafeLoader``, ``yaml.unsafe_load``, ``yaml.full_load``.
KL005  ``subprocess`` (or anything) called with ``shell=True``; ``os.system``; ``os.popen``.
KL006  ``chmod`` on what looks like a key/secret file (heuristic: the path expression
       mentions key/secret/token/pem, or the mode is 0o600/0o400). Keys must be created
       0600 (``kedge._internal.fsutil``), never tightened afterwards.
KL007  ``import kubernetes`` under ``kedge/edge/`` (the edge must stay small).
KL008  ``open(<key-ish path>, "w...")`` or ``<key-ish path>.write_bytes/write_text(...)`` -- key files are written through
       ``kedge._internal.fsutil.write_private``/``create_exclusive`` (0600 from creation).

A finding can be waived on its line with ``# kedge-lint: allow KL00N - <reason>``; a
waiver without a reason is itself a finding (KL000).

The core (:func:`lint_source`) is pure: source text and a repository-relative path in,
findings out.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import sys
from pathlib import Path

MAX_SOURCE_BYTES = 4 * 1024 * 1024

TLS_MODULE = "kedge/tls.py"
CLI_PREFIX = "kedge/cli/"
EDGE_PREFIX = "kedge/edge/"
KEYISH = re.compile(r"(?i)(key|secret|token|\.pem\b|passw)")
KEY_FILE_PATH = re.compile(r"(?i)(\.key\b|_key\b|key_?path|key_?file|private)")
WAIVER = re.compile(r"#\s*kedge-lint:\s*allow\s+(KL\d{3})(?:\s*[-:—]\s*(\S.*))?")
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill"}


@dataclasses.dataclass(frozen=True, order=True)
class Issue:
    path: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, '' otherwise."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


class _Visitor(ast.NodeVisitor):
    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.source = source
        self.issues: list[Issue] = []
        self.func_stack: list[str] = []
        self.in_tls = path == TLS_MODULE
        self.in_cli = path.startswith(CLI_PREFIX) or path.endswith("/__main__.py")
        self.main_guard_depth = 0
        self.in_edge = path.startswith(EDGE_PREFIX)

    # -- helpers
    def add(self, node: ast.AST, code: str, message: str) -> None:
        self.issues.append(Issue(self.path, getattr(node, "lineno", 0), getattr(node, "col_offset", 0), code, message))

    def in_unsafe_tls_function(self) -> bool:
        return self.in_tls and any(name.startswith("unsafe_") for name in self.func_stack)

    def text(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.source, node) or ""

    # -- scopes
    def visit_If(self, node: ast.If) -> None:
        test = node.test
        is_main_guard = (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and test.left.id == "__name__"
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__"
        )
        if not is_main_guard:
            self.generic_visit(node)
            return
        self.visit(node.test)
        self.main_guard_depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self.main_guard_depth -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.func_stack.append(node.name)
        self.generic_visit(node)
        self.func_stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    # -- imports
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            self._check_module(node, node.module)
            if node.module == "ssl":
                for alias in node.names:
                    if alias.name == "CERT_NONE" and not self.in_unsafe_tls_function():
                        self.add(node, "KL001", "imports ssl.CERT_NONE (TLS verification off)")
                    if alias.name == "_create_unverified_context" and not self.in_unsafe_tls_function():
                        self.add(node, "KL001", "imports ssl._create_unverified_context")
            if node.module == "sys" and any(a.name == "exit" for a in node.names) and not self.in_cli:
                self.add(node, "KL003", "imports sys.exit outside kedge/cli/")
        self.generic_visit(node)

    def _check_module(self, node: ast.AST, module: str) -> None:
        top = module.split(".")[0]
        if top in FORBIDDEN_MODULES:
            self.add(node, "KL004", f"imports {module} (unsafe deserialisation)")
        if top == "kubernetes" and self.in_edge:
            self.add(node, "KL007", "imports kubernetes under kedge/edge/ (edge must not load the client)")

    # -- names/attributes
    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "CERT_NONE" and not self.in_unsafe_tls_function():
            self.add(node, "KL001", "uses ssl.CERT_NONE (TLS verification off)")
        if node.attr == "_create_unverified_context" and not self.in_unsafe_tls_function():
            self.add(node, "KL001", "uses ssl._create_unverified_context")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "CERT_NONE" and isinstance(node.ctx, ast.Load) and not self.in_unsafe_tls_function():
            self.add(node, "KL001", "uses CERT_NONE (TLS verification off)")
        self.generic_visit(node)

    # -- assignments
    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_assign(node, target, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._check_assign(node, node.target, node.value)
        self.generic_visit(node)

    def _check_assign(self, node: ast.AST, target: ast.AST, value: ast.AST) -> None:
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "check_hostname"
            and isinstance(value, ast.Constant)
            and value.value is False
            and not self.in_unsafe_tls_function()
        ):
            self.add(node, "KL001", "sets check_hostname = False")

    # -- calls
    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        if name:
            last = name.rsplit(".", 1)[-1]
        else:  # a call on an expression, e.g. (d / "node.key").write_bytes(...)
            last = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        for kw in node.keywords:
            if kw.arg == "verify" and isinstance(kw.value, ast.Constant) and kw.value.value is False:
                self.add(node, "KL001", "passes verify=False")
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                self.add(node, "KL005", "calls with shell=True (or a non-constant shell=)")
        if last in ("SSLContext", "create_default_context") and not self.in_tls:
            self.add(node, "KL002", f"builds a TLS context ({name}) outside kedge/tls.py")
        if name in ("sys.exit", "os._exit") and not (self.in_cli or self.main_guard_depth):
            self.add(node, "KL003", f"calls {name} outside kedge/cli/")
        if name in ("os.system", "os.popen"):
            self.add(node, "KL005", f"calls {name} (shell)")
        if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"):
            self.add(node, "KL004", f"calls {name}")
        if name in ("yaml.load", "yaml.load_all"):
            loader = None
            if len(node.args) >= 2:
                loader = node.args[1]
            for kw in node.keywords:
                if kw.arg == "Loader":
                    loader = kw.value
            loader_name = _dotted(loader).rsplit(".", 1)[-1] if loader is not None else ""
            if loader_name not in SAFE_LOADERS:
                self.add(node, "KL004", f"calls {name} without a safe loader (use yaml.safe_load)")
        if last == "chmod":
            self._check_chmod(node, name)
        if name in ("open", "io.open"):
            self._check_open(node)
        if last in ("write_bytes", "write_text") and isinstance(node.func, ast.Attribute):
            if KEY_FILE_PATH.search(self.text(node.func.value)):
                self.add(node, "KL008", f"{last}() on a key file creates it with the umask's mode; use fsutil.write_private")
        self.generic_visit(node)

    def _check_chmod(self, node: ast.Call, name: str) -> None:
        # os.chmod(path, mode) / Path(...).chmod(mode)
        if name in ("os.chmod", "chmod", "os.lchmod"):
            path_expr = node.args[0] if node.args else None
            mode_expr = node.args[1] if len(node.args) > 1 else None
        else:
            path_expr = node.func.value if isinstance(node.func, ast.Attribute) else None
            mode_expr = node.args[0] if node.args else None
        for kw in node.keywords:
            if kw.arg == "mode":
                mode_expr = kw.value
        path_text = self.text(path_expr) if path_expr is not None else ""
        private_mode = isinstance(mode_expr, ast.Constant) and mode_expr.value in (0o600, 0o400)
        if KEYISH.search(path_text) or private_mode:
            self.add(node, "KL006", "chmod on a key/secret file after creation (create it 0600 via fsutil)")

    def _check_open(self, node: ast.Call) -> None:
        if not node.args:
            return
        mode = node.args[1] if len(node.args) > 1 else None
        for kw in node.keywords:
            if kw.arg == "mode":
                mode = kw.value
        if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                and any(flag in mode.value for flag in "wax")):
            return
        if KEY_FILE_PATH.search(self.text(node.args[0])):
            self.add(node, "KL008",
                     "writes a key file with open(); use fsutil.write_private/create_exclusive (0600 from creation)")


def _apply_waivers(issues: list[Issue], source: str, path: str) -> list[Issue]:
    lines = source.splitlines()
    kept: list[Issue] = []
    for issue in issues:
        line = lines[issue.line - 1] if 0 < issue.line <= len(lines) else ""
        m = WAIVER.search(line)
        if m and m.group(1) == issue.code:
            if not (m.group(2) or "").strip():
                kept.append(Issue(path, issue.line, issue.col, "KL000", f"waiver for {issue.code} without a reason"))
            continue
        kept.append(issue)
    return kept


def lint_source(source: str, path: str) -> list[Issue]:
    """Lint one module. ``path`` is repository-relative with '/' separators (it decides
    which rules apply: ``kedge/tls.py``, ``kedge/cli/``, ``kedge/edge/``)."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return [Issue(path, exc.lineno or 0, exc.offset or 0, "KL999", f"cannot parse: {exc.msg}")]
    visitor = _Visitor(path, source)
    visitor.visit(tree)
    return sorted(set(_apply_waivers(visitor.issues, source, path)))


def lint_paths(paths: list[Path], root: Path) -> list[Issue]:
    """Lint every ``*.py`` under ``paths``; paths in findings are relative to ``root``."""
    issues: list[Issue] = []
    for base in paths:
        files = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for f in files:
            if "__pycache__" in f.parts:
                continue
            try:
                rel = f.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                rel = f.as_posix()
            data = f.read_bytes()
            if len(data) > MAX_SOURCE_BYTES:
                issues.append(Issue(rel, 0, 0, "KL999", "file too large to lint"))
                continue
            issues.extend(lint_source(data.decode("utf-8", errors="replace"), rel))
    return issues


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(__file__).resolve().parent.parent
    targets = [Path(a) if Path(a).is_absolute() else root / a for a in (args or ["kedge"])]
    issues = lint_paths(targets, root)
    for issue in issues:
        print(issue)
    print(f"kedge-lint: {len(issues)} finding(s) in {', '.join(args or ['kedge'])}", file=sys.stderr)
    return 1 if issues else 0


if __name__ == "__main__":
    raise SystemExit(main())
