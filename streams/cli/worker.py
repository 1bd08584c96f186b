"""`vigil worker`: the stream agents of both topologies in one Faust worker (start more to scale out)."""
from __future__ import annotations

import argparse
from typing import Any

from vigil.streams.cli.common import console
from vigil.streams.runtime.settings import Settings


def cmd_worker(args: argparse.Namespace) -> int:
    from faust import Worker

    from vigil.streams.runtime.app import create_app
    from vigil.streams.runtime.logs import logging_config
    from vigil.streams.runtime.topics import ensure_topics

    settings = Settings.from_env()
    if args.web_port is not None:
        from dataclasses import replace

        settings = replace(settings, web_port=args.web_port)
    ensure_topics(settings)
    app = create_app(settings)
    if not app.model_control.start():
        console.print("[yellow]warning:[/yellow] models.control was not read to its end in 30 s; serving the registry's active "
                      "models until it is")
    worker = Worker(app, loglevel=args.loglevel, logging_config=logging_config(args.loglevel, args.log_format))
    worker.execute_from_commandline()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the stream agents (start more workers to scale out)")
    p.add_argument("--web-port", type=int, default=None, help="port of /metrics (default VIGIL_WEB_PORT or 6066)")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    p.set_defaults(func=cmd_worker)
