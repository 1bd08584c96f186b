"""`vigil worker`: the stream agents of both topologies and the monitoring stages in one Faust worker, or one role of
them (``--role``); start more to scale out."""
from __future__ import annotations

import argparse
from typing import Any

from vigil.streams.cli.common import console
from vigil.streams.runtime.settings import WORKER_ROLES, Settings


def cmd_worker(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from faust import Worker

    from vigil.streams.runtime.app import create_app
    from vigil.streams.runtime.logs import logging_config
    from vigil.streams.runtime.topics import ensure_topics

    settings = Settings.from_env()
    if args.web_port is not None:
        settings = replace(settings, web_port=args.web_port)
    if args.role is not None:
        settings = replace(settings, worker_role=args.role)
    ensure_topics(settings)
    app = create_app(settings)
    if app.model_control is not None and not app.model_control.start():
        console.print("[yellow]warning:[/yellow] models.control was not read to its end in 30 s; serving the registry's active "
                      "models until it is")
    worker = Worker(app, loglevel=args.loglevel, logging_config=logging_config(args.loglevel, args.log_format))
    worker.execute_from_commandline()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the stream agents (start more workers to scale out)")
    p.add_argument("--web-port", type=int, default=None, help="port of /metrics (default VIGIL_WEB_PORT or 6066)")
    p.add_argument("--role", choices=WORKER_ROLES, default=None,
                   help="all: every stage (default VIGIL_WORKER_ROLE or all); scoring: both topologies and the model "
                        "watcher; monitoring: the ops.* stages, in a consumer group of their own")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    p.set_defaults(func=cmd_worker)
