"""Fuzz ``kedge verify``'s input side: provenance / bundle files as untrusted bytes.

Invariant: parsing a bundle/provenance file either yields a verification result or
raises a VerificationError; never crashes, never passes an unsigned input.

Each input is run twice through :func:`kedge.verify.api.verify_provenance`:
- with the fixed public key below (``--key`` mode): a pass is only legitimate if
  the verified statement is exactly :data:`SIGNED_PAYLOAD`, the one payload the
  fixed private key ever signed (seeds carry a valid envelope for it); any other
  passing statement means an unsigned input was accepted;
- without a key (Sigstore mode, vendored trust root, offline): no input here
  carries a real Fulcio certificate and log proof, so any pass is a finding.
Any exception other than VerificationError (UnsupportedFormat included) escapes
and is a crash.

Run: ``python fuzz/targets/fuzz_bundle.py fuzz/corpus/bundle -max_total_time=60``
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

try:
    import kedge  # noqa: F401
except ImportError:  # running as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric import ec

from kedge.errors import VerificationError
from kedge.verify import api, policy

logging.disable(logging.CRITICAL)  # sigstore-python logs warnings for odd bundles

#: Fixed, public, test-only key: lets seeds carry a valid signature.
FUZZ_KEY = ec.derive_private_key(0x6B6564676520667A7A206B6579, ec.SECP256R1())
DIGEST = "5e" * 32
SIGNED_PAYLOAD = json.dumps(
    {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "artifact", "digest": {"sha256": DIGEST}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://kedge.dev/fuzz/v1",
                "externalParameters": {"workflow": {"repository": "https://github.com/o/r", "ref": "refs/tags/v1.0.0"}},
                "resolvedDependencies": [{"uri": "git+https://github.com/o/r@refs/tags/v1.0.0",
                                          "digest": {"gitCommit": "ab" * 20}}],
            },
            "runDetails": {"builder": {"id": "https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1.0.0"}},
        },
    },
    sort_keys=True,
).encode()
OPTS = policy.SlsaOptions(artifact_sha256=DIGEST, source_uri="github.com/o/r")


def test_one_input(data: bytes) -> None:
    try:
        outcome = api.verify_provenance(data, OPTS, key=FUZZ_KEY.public_key())
    except VerificationError:
        pass
    else:
        if outcome.statement != SIGNED_PAYLOAD:
            raise AssertionError("key mode passed a statement the key never signed")
    try:
        api.verify_provenance(data, OPTS)
    except VerificationError:
        return
    raise AssertionError("Sigstore mode passed an input without a real certificate and log proof")


def main() -> None:
    import atheris  # lazily: replaying the corpus in the test suite must not need it

    # Coverage feedback for kedge.verify, sigstore-python, pydantic's Python side.
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
