"""``kedge manifests``: CRDs and least-privilege RBAC for running against a real cluster."""

from kedge.manifests.generate import (
    CLOUDCORE_ROLE, DEFAULT_CLOUDCORE_USER, DEFAULT_NAMESPACE, FORMATS, IMPERSONATE_ROLE, ManifestOptions,
    build_objects, impersonation_rules, missing_nodes_note, render,
)

__all__ = [
    "CLOUDCORE_ROLE", "DEFAULT_CLOUDCORE_USER", "DEFAULT_NAMESPACE", "FORMATS", "IMPERSONATE_ROLE",
    "ManifestOptions", "build_objects", "impersonation_rules", "missing_nodes_note", "render",
]
