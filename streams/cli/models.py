"""`vigil models list|show|promote|rollback`: the registry from the command line."""
from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from vigil.streams.cli.common import out, print_json
from vigil.streams.runtime.settings import Settings


def cmd_models(args: argparse.Namespace) -> int:
    from vigil.models.registry import ModelRegistry

    settings = Settings.from_env()
    registry = ModelRegistry(settings.models_dir)
    if args.action == "list":
        tiers = [args.tier] if args.tier else registry.tiers()
        rows = []
        for tier in tiers:
            active = registry.active_version(tier)
            for meta in registry.versions(tier):
                rows.append({"tier": tier, "version": meta["version"], "active": meta["version"] == active,
                             "created_at": meta["created_at"], "thresholds": meta.get("thresholds", {}),
                             "source": meta.get("source", "")})
        if args.json:
            print_json(rows)
            return 0
        table = Table(title=f"models in {settings.models_dir}")
        for column in ("tier", "version", "active", "created", "thresholds"):
            table.add_column(column)
        for r in rows:
            thresholds = ", ".join(f"{k} {v:.3g}" for k, v in r["thresholds"].items())
            table.add_row(r["tier"], r["version"], "*" if r["active"] else "", r["created_at"][:19], thresholds)
        out.print(table)
        return 0
    if args.action == "show":
        meta = registry.metadata(args.tier, args.version)
        meta["active"] = meta["version"] == registry.active_version(args.tier)
        meta["history"] = registry.history(args.tier)
        if args.json:
            print_json(meta)
        else:
            meta.pop("reference_histograms", None)  # long; --json shows it
            out.print_json(json.dumps(meta, default=str))
        return 0
    if args.action == "promote":
        registry.promote(args.tier, args.version)
        message = {"tier": args.tier, "active": args.version}
    else:
        message = {"tier": args.tier, "active": registry.rollback(args.tier, args.to)}
    if args.json:
        print_json(message)
    else:
        out.print(f"{message['tier']}: active version is now [bold]{message['active']}[/bold]")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="list, show, promote or roll back models in the registry (VIGIL_MODELS)")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list")
    a.add_argument("--tier", default=None)
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("show")
    a.add_argument("tier")
    a.add_argument("version", nargs="?", default=None, help="default: the active one")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("promote", help="make a version the active one")
    a.add_argument("tier")
    a.add_argument("version")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("rollback", help="re-activate the previously active version (or --to one)")
    a.add_argument("tier")
    a.add_argument("--to", default=None)
    a.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
