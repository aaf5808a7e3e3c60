"""``kedge manifests``: print the CRDs and RBAC cloudcore needs on a real Kubernetes cluster.

Usage: ``kedge manifests --node edge-1 --node edge-2 | kubectl apply -f -``. Output goes to
stdout only (nothing is written or applied); the note about missing ``--node`` goes to
stderr so it is seen even when stdout is piped into kubectl.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from kedge.manifests.generate import DEFAULT_CLOUDCORE_USER, DEFAULT_NAMESPACE, FORMATS

    p = sub.add_parser("manifests", help="CRDs + least-privilege RBAC for `cloudcore --kubeconfig`")
    p.add_argument("--node", action="append", default=[], metavar="NAME",
                   help="an edge node cloudcore may impersonate (repeat for each node; no wildcard exists)")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace created for cloudcore")
    p.add_argument("--cloudcore-user", default=DEFAULT_CLOUDCORE_USER,
                   help="the user name cloudcore authenticates as (x509 CN, or system:serviceaccount:NS:NAME)")
    p.add_argument("--format", choices=FORMATS, default="yaml")
    p.set_defaults(func=cmd_manifests)


def cmd_manifests(args: argparse.Namespace) -> int:
    from kedge.manifests.generate import ManifestOptions, missing_nodes_note, render

    opts = ManifestOptions(nodes=tuple(args.node), namespace=args.namespace, cloudcore_user=args.cloudcore_user)
    text = render(opts, args.format)
    if not opts.nodes:
        print(f"kedge: note: {missing_nodes_note()}", file=sys.stderr)
    sys.stdout.write(text)
    return 0
