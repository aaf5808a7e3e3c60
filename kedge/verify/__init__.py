"""Offline verification of release provenance (SLSA, Sigstore bundles, DSSE).

``dsse`` holds the envelope primitives (pure, no I/O); ``policy`` the SLSA checks
on a decoded provenance statement; ``bundles`` the thin shell around
sigstore-python (public API) and pypi-attestations that checks signatures, log
proofs and certificates against a pinned, vendored trusted root;
``_sigstore_adapter`` the only module that touches sigstore-python's private
members, each listed and checked there.
"""
