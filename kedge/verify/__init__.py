"""Offline verification of release provenance (SLSA, Sigstore bundles, DSSE).

``dsse`` holds the envelope primitives (pure, no I/O); ``policy`` the SLSA checks
on a decoded provenance statement; ``sigstore_bundle`` the thin shell around
sigstore-python that checks signatures, log proofs and certificates against a
pinned, vendored trusted root.
"""
