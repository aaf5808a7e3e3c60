"""``kedge apiserver --data-dir DIR [--port P]``: the embedded Kubernetes API server alone."""

from __future__ import annotations

import argparse
import asyncio
import signal

from kedge._internal import logfmt


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError("port must be 0..65535")
    return int(value)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apiserver", help="run the embedded Kubernetes-compatible API server")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--port", type=_port, default=None, help="override config.json api_port (0 = free port)")
    p.add_argument("--watch-history", type=_positive, default=10_000,
                   help="events kept for watches from an old resourceVersion (older ones get 410 Gone)")
    logfmt.add_argument(p)
    p.set_defaults(func=cmd_apiserver)


def _positive(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 10_000_000:
        raise argparse.ArgumentTypeError("must be 1..10000000")
    return int(value)


def cmd_apiserver(args: argparse.Namespace) -> int:
    from kedge.apiserver.server import serve_apiserver

    logfmt.apply(args)
    async def main() -> None:
        task = asyncio.ensure_future(serve_apiserver(args.data_dir, port=args.port, watch_window=args.watch_history))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return 0
