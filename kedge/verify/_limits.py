"""Bounds on every input ``kedge verify`` reads (provenance, bundles, keys).

Kept beside the verifier rather than in :mod:`kedge.limits` because only this
package reads these files; the shape mirrors :class:`kedge.limits.Limits`.
"""

from __future__ import annotations

import dataclasses

KIB = 1024
MIB = 1024 * KIB


@dataclasses.dataclass(frozen=True)
class VerifyLimits:
    """Caps that make a hostile provenance or bundle file cheap to refuse."""

    max_file_bytes: int = 16 * MIB  # a bundle / provenance / .jsonl file
    max_payload_bytes: int = 8 * MIB  # decoded DSSE payload
    max_json_depth: int = 64
    max_signatures: int = 16  # DSSE signatures considered
    max_subjects: int = 10_000  # in-toto subjects
    max_lines: int = 64  # lines of a .intoto.jsonl file
    max_key_bytes: int = 64 * KIB  # PEM public key
    max_trusted_root_bytes: int = 4 * MIB

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"limit {field.name} must be a positive int, got {value!r}")


DEFAULT = VerifyLimits()
