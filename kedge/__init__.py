"""kedge: a security-hardened re-implementation of KubeEdge."""

__version__ = "0.1.0"
