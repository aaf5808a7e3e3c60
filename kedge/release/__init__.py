"""Reproducible releases: build, SBOM, SLSA provenance, in-toto links and signing.

``python -m kedge.release build --out dist`` (what ``make release`` runs) builds the
wheel and sdist from a clean clone of the last commit, writes a CycloneDX SBOM,
``SHA256SUMS``, one in-toto Statement with an SLSA Provenance v1 predicate per
artifact and signed in-toto links for the checkout, build and sbom steps.
``kedge release sign`` wraps each Statement in a DSSE envelope and signs the in-toto
root layout with a local ECDSA P-256 key; CI signs keylessly with Sigstore instead.

The pure parts (:mod:`.sums`, :mod:`.provenance`, :mod:`.sbom`'s document builder)
take everything, including the time, as parameters; :mod:`.build`, :mod:`.intoto`
and :mod:`.sign` are the shells that touch git, hatchling, files and keys.
"""
