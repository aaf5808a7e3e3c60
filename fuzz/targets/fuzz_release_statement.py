"""Fuzz the Statement reader ``kedge release sign`` runs before it signs a provenance file.

Invariant: ``kedge.release.provenance.parse_statement`` either returns the parsed
Statement or raises :class:`kedge.errors.VerificationError` with code
``limit_exceeded`` or ``malformed_statement`` -- nothing else (no ``RecursionError``,
``TypeError``, ``KeyError``...). A returned document is an in-toto Statement v1 with
an SLSA Provenance v1 predicate and 1..``MAX_SUBJECTS`` subjects, each with a name
(non-empty, at most 255 characters, no ``/``) and a 64-hex sha256 digest.

``kedge release sign`` checks each statement by comparing ``subject_digests(doc)``
with ``SHA256SUMS`` and then signs the statement's exact bytes, so that mapping must
speak for *every* subject: each ``(name, sha256)`` the document lists must be in
``subject_digests(doc)``. Otherwise a statement that also vouches for a second,
different digest under an artifact's name would pass the check and be signed.

Input: the raw bytes are the statement file.

Run: ``.venv/bin/python fuzz/targets/fuzz_release_statement.py -max_total_time=60 /tmp/scratch fuzz/corpus/release_statement``
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kedge.errors import VerificationError
from kedge.release import provenance

CODES = {"limit_exceeded", "malformed_statement"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _require(ok: bool, what: str) -> None:
    """Like assert, but survives ``python -O``: a violated invariant is a crash."""
    if not ok:
        raise AssertionError(what)


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises only if the invariant in the module docstring breaks."""
    try:
        doc = provenance.parse_statement(data)
    except VerificationError as exc:
        _require(exc.code in CODES, f"undocumented code {exc.code}")
        return
    _require(isinstance(doc, dict), "not a JSON object")
    _require(doc.get("_type") == provenance.STATEMENT_TYPE, "wrong _type accepted")
    _require(doc.get("predicateType") == provenance.SLSA_PROVENANCE_V1, "wrong predicateType accepted")
    _require(isinstance(doc.get("predicate"), dict), "predicate is not an object")
    subjects = doc["subject"]
    _require(isinstance(subjects, list) and 0 < len(subjects) <= provenance.MAX_SUBJECTS, "subject count")
    digests = provenance.subject_digests(doc)
    for entry in subjects:
        name, sha = entry["name"], entry["digest"]["sha256"]
        _require(isinstance(name, str) and 0 < len(name) <= 255 and "/" not in name, f"bad name {name!r}")
        _require(isinstance(sha, str) and bool(_HEX64.fullmatch(sha)), "bad sha256")
        _require(digests.get(name) == sha,
                 f"subject {name!r} lists a digest that subject_digests() does not report")


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
