"""Static analysis gates: bandit (medium and above) and kedge's own AST lint.

bandit runs as a subprocess, the way CI runs it; the lint core is called directly on
planted fixture sources (each must be flagged) and on the whole ``kedge/`` tree (which
must be clean).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BANDIT_CONFIG = ROOT / "security" / "bandit.yaml"
LINT_SCRIPT = ROOT / "security" / "lint.py"
# "# nosec B101 - reason" / "# nosec B603 B607: reason": test ids, then a reason.
JUSTIFIED_NOSEC = re.compile(r"#\s*nosec\s+(B\d{3}(?:[\s,]+B\d{3})*)\s*[-:—]\s*\S.{2,}")
# "# reason  # nosec B101": the reason written before the waiver, in the same comment.
REASON_BEFORE_NOSEC = re.compile(r"^#\s*(?!nosec)\S.{2,}#\s*nosec\s+B\d{3}(?:[\s,]+B\d{3})*\s*$")


def _load_lint():
    spec = importlib.util.spec_from_file_location("kedge_security_lint", LINT_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lint = _load_lint()


def _bandit(*args: str, target: Path) -> dict:
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "bandit", "-q", "-c", str(BANDIT_CONFIG), "-f", "json", *args, "-r", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@functools.lru_cache(maxsize=1)
def _kedge_findings_ignoring_nosec() -> tuple[dict, ...]:
    """One bandit run over kedge/ (medium and above) that also reports what `# nosec`
    hides; both bandit tests below judge the same run (bandit takes seconds per run)."""
    report = _bandit("-ll", "--ignore-nosec", target=ROOT / "kedge")
    assert report["errors"] == []
    return tuple(report["results"])


def _line_of(result: dict) -> str:
    return Path(result["filename"]).read_text(encoding="utf-8").splitlines()[result["line_number"] - 1]


def _nosec_comments(root: Path) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        with path.open("rb") as fh:
            for tok in tokenize.tokenize(fh.readline):
                if tok.type == tokenize.COMMENT and re.search(r"#\s*nosec\b", tok.string):
                    found.append((str(path.relative_to(ROOT)), tok.start[0], tok.string))
    return found


# --------------------------------------------------------------------------- bandit


def test_bandit_reports_no_medium_or_high_finding_in_kedge():
    """`bandit -r kedge -ll`: every medium/high finding is waived on its line or there is none."""
    findings = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in _kedge_findings_ignoring_nosec()
        if not re.search(r"#\s*nosec\b", _line_of(r))
    ]
    assert findings == []


def test_every_nosec_in_kedge_names_a_test_id_and_a_reason():
    unjustified = [
        f"{path}:{line}: {text}"
        for path, line, text in _nosec_comments(ROOT / "kedge")
        if not (JUSTIFIED_NOSEC.search(text) or REASON_BEFORE_NOSEC.match(text))
    ]
    assert unjustified == [], "each `# nosec` must read `# nosec BXXX - reason`"


def test_medium_findings_hidden_by_nosec_are_each_justified_for_that_test():
    problems = []
    for r in _kedge_findings_ignoring_nosec():
        line = _line_of(r)
        m = JUSTIFIED_NOSEC.search(line)
        if not m or r["test_id"] not in re.split(r"[\s,]+", m.group(1)):
            problems.append(f"{r['filename']}:{r['line_number']} {r['test_id']}: {line.strip()}")
    assert problems == []


def test_bandit_gate_catches_a_planted_shell_injection(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import subprocess\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n")
    report = _bandit("-ll", target=tmp_path)
    assert {r["test_id"] for r in report["results"]} & {"B602", "B604"}


def test_nosec_pattern_rejects_a_bare_waiver():
    assert not JUSTIFIED_NOSEC.search("x = 1  # nosec")
    assert not JUSTIFIED_NOSEC.search("x = 1  # nosec B101")
    assert JUSTIFIED_NOSEC.search("x = 1  # nosec B101 - typing aid only")
    assert JUSTIFIED_NOSEC.search("x = 1  # nosec B603 B607 - fixed argv")
    assert REASON_BEFORE_NOSEC.match("# typing aid only  # nosec B101")
    assert not REASON_BEFORE_NOSEC.match("# nosec B101")


# --------------------------------------------------------------------------- custom lint

PLANTED = {
    "KL001-cert-none": ("kedge/cloud/x.py", "import ssl\nctx = None\nctx.verify_mode = ssl.CERT_NONE\n", "KL001"),
    "KL001-cert-none-imported": ("kedge/cloud/x.py", "from ssl import CERT_NONE\n", "KL001"),
    "KL001-check-hostname": ("kedge/cloud/x.py", "def f(ctx):\n    ctx.check_hostname = False\n", "KL001"),
    "KL001-verify-false": ("kedge/cloud/x.py", "def f(s):\n    return s.get('https://x', verify=False)\n", "KL001"),
    "KL001-unverified": ("kedge/cloud/x.py", "import ssl\nctx = ssl._create_unverified_context()\n", "KL001"),
    "KL001-tls-module-not-unsafe": (
        "kedge/tls.py",
        "import ssl\ndef client():\n    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n    c.verify_mode = ssl.CERT_NONE\n",
        "KL001",
    ),
    "KL002-sslcontext": ("kedge/edge/hub.py", "import ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n", "KL002"),
    "KL002-default-context": ("kedge/cloud/x.py", "import ssl\nctx = ssl.create_default_context()\n", "KL002"),
    "KL003-sys-exit": ("kedge/cloud/x.py", "import sys\ndef f():\n    sys.exit(1)\n", "KL003"),
    "KL003-exit-outside-main-guard-else": (
        "kedge/x.py",
        "import sys\nif __name__ == '__main__':\n    pass\nelse:\n    sys.exit(1)\n",
        "KL003",
    ),
    "KL003-os-exit": ("kedge/edge/x.py", "import os\ndef f():\n    os._exit(1)\n", "KL003"),
    "KL004-pickle": ("kedge/store/x.py", "import pickle\n", "KL004"),
    "KL004-yaml-load": ("kedge/cloud/x.py", "import yaml\ndef f(b):\n    return yaml.load(b)\n", "KL004"),
    "KL004-yaml-full-loader": (
        "kedge/cloud/x.py",
        "import yaml\ndef f(b):\n    return yaml.load(b, Loader=yaml.FullLoader)\n",
        "KL004",
    ),
    "KL004-unsafe-load": ("kedge/cloud/x.py", "import yaml\ndef f(b):\n    return yaml.unsafe_load(b)\n", "KL004"),
    "KL005-shell-true": (
        "kedge/release/x.py",
        "import subprocess\ndef f(c):\n    subprocess.run(c, shell=True)\n",
        "KL005",
    ),
    "KL005-os-system": ("kedge/release/x.py", "import os\ndef f(c):\n    os.system(c)\n", "KL005"),
    "KL006-chmod-key": ("kedge/pki/x.py", "import os\ndef f(d):\n    os.chmod(d / 'node.key', 0o600)\n", "KL006"),
    "KL006-path-chmod": ("kedge/pki/x.py", "def f(key_path):\n    key_path.chmod(0o600)\n", "KL006"),
    "KL007-kubernetes-on-edge": ("kedge/edge/x.py", "import kubernetes\n", "KL007"),
    "KL007-kubernetes-from": ("kedge/edge/x.py", "from kubernetes import client\n", "KL007"),
    "KL008-open-key": ("kedge/pki/x.py", "def f(key_path, b):\n    with open(key_path, 'wb') as fh:\n        fh.write(b)\n", "KL008"),
    "KL008-write-bytes-key": ("kedge/edge/x.py", "def f(d, b):\n    (d / 'node.key').write_bytes(b)\n", "KL008"),
    "KL000-waiver-without-reason": (
        "kedge/cloud/x.py",
        "import sys\ndef f():\n    sys.exit(1)  # kedge-lint: allow KL003\n",
        "KL000",
    ),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_lint_flags_planted_violation(case):
    path, source, code = PLANTED[case]
    codes = [i.code for i in lint.lint_source(source, path)]
    assert code in codes, codes


ALLOWED = {
    "unsafe-function-in-tls-module": (
        "kedge/tls.py",
        "import ssl\ndef unsafe_discovery_context():\n"
        "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "    ctx.check_hostname = False\n    ctx.verify_mode = ssl.CERT_NONE\n    return ctx\n",
    ),
    "context-built-in-tls-module": ("kedge/tls.py", "import ssl\ndef server():\n    return ssl.create_default_context()\n"),
    "sys-exit-in-cli": ("kedge/cli/main.py", "import sys\ndef main():\n    sys.exit(0)\n"),
    "sys-exit-under-main-guard": (
        "kedge/mapper/examples/x.py",
        "import sys\ndef main():\n    return 0\nif __name__ == '__main__':\n    sys.exit(main())\n",
    ),
    "sys-exit-in-main-module": ("kedge/release/__main__.py", "import sys\nfrom kedge.cli.x import main\nsys.exit(main())\n"),
    "yaml-safe-loader": ("kedge/cloud/x.py", "import yaml\ndef f(b):\n    return yaml.load(b, Loader=yaml.SafeLoader)\n"),
    "shell-false": ("kedge/release/x.py", "import subprocess\ndef f(c):\n    subprocess.run(c, shell=False)\n"),
    "kubernetes-in-cloud": ("kedge/cloud/x.py", "import kubernetes\n"),
    "chmod-public-file": ("kedge/cloud/x.py", "import os\ndef f(p):\n    os.chmod(p / 'ca.crt', 0o644)\n"),
    "waiver-with-reason": (
        "kedge/cloud/x.py",
        "import sys\ndef f():\n    sys.exit(1)  # kedge-lint: allow KL003 - re-exec helper, documented\n",
    ),
    "read-key-file": ("kedge/pki/x.py", "def f(key_path):\n    with open(key_path, 'rb') as fh:\n        return fh.read()\n"),
}


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_lint_allows_sanctioned_pattern(case):
    path, source = ALLOWED[case]
    assert lint.lint_source(source, path) == []


def test_lint_script_flags_cert_none_planted_in_a_fixture_file(tmp_path):
    planted = tmp_path / "planted_tls.py"
    planted.write_text("import ssl\n\ndef connect(ctx):\n    ctx.verify_mode = ssl.CERT_NONE\n")
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, str(LINT_SCRIPT), str(planted)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "KL001" in proc.stdout and "CERT_NONE" in proc.stdout


def test_kedge_tree_is_lint_clean():
    issues = [str(i) for i in lint.lint_paths([ROOT / "kedge"], ROOT)]
    assert issues == []


def test_lint_reports_unparseable_source_instead_of_passing_it():
    assert [i.code for i in lint.lint_source("def broken(:\n", "kedge/x.py")] == ["KL999"]


def test_nosec_scanner_reads_comments_not_strings():
    src = 's = "# nosec"\nx = 1  # nosec B101 - reason here\n'
    toks = [t.string for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT]
    assert toks == ["# nosec B101 - reason here"]
