"""`vigil models list|show|promote|rollback|retire|history|compare`: the registry, and the changes workers follow.

``list`` and ``show`` read the registry (VIGIL_MODELS). ``promote`` and
``rollback`` write a change to ``models.control`` and ``models.audit`` on the
broker, so running workers switch without a restart; ``history`` reads the
audit topic back."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any

from rich.table import Table

from vigil.streams.cli.common import out, print_json, time_ms
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
    return _change(args, settings, registry)


def _change(args: argparse.Namespace, settings: Settings, registry: Any) -> int:
    from confluent_kafka import KafkaException

    from vigil.streams.lifecycle.control import ModelChanges

    changes = ModelChanges(settings, registry)
    try:
        if args.action == "history":
            return _print_history(changes.history(args.tier), args)
        if args.action == "compare":
            from vigil.streams.lifecycle.compare import compare_tier

            report = compare_tier(settings, args.tier, since_ms=time_ms(args.since), until_ms=time_ms(args.until))
            return _print_comparison(report, args)
        if args.action == "promote":
            if args.alias != "canary" and args.share is not None:
                raise ValueError("--share is for a canary (--as canary)")
            share = 1.0 if args.alias != "canary" else (0.1 if args.share is None else args.share)
            change = changes.promote(args.tier, args.version, why=args.why, who=args.who, alias=args.alias, share=share)
        elif args.action == "retire":
            change = changes.retire(args.tier, args.alias, why=args.why, who=args.who)
        else:
            change = changes.rollback(args.tier, why=args.why, to=args.to, who=args.who)
    except (KafkaException, TimeoutError) as exc:
        raise RuntimeError(f"could not reach the broker at {settings.bootstrap_servers} ({exc}); nothing changed") from None
    if args.json:
        print_json(change)
    elif change["action"] == "retire":
        out.print(f"{change['tier']}: {change['alias']} {change['version']} retired (epoch {change['epoch']}); running workers stop "
                  "serving it at their next batch")
    else:
        share = f" for {change['share']:.0%} of assets" if change["alias"] == "canary" else ""
        out.print(f"{change['tier']}: {change['alias']} is now [bold]{change['version']}[/bold]{share} (was {change['previous_version']}, "
                  f"epoch {change['epoch']}); running workers switch at their next batch")
    return 0


def _print_comparison(report: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        print_json(report)
        return 0
    forces = ", ".join(f"{alias} {f['version']}" + (f" ({f['share']:.0%})" if alias == "canary" else "")
                       for alias, f in report["in_force"].items() if f) or "no changes on models.control"
    out.print(f"[bold]{report['tier']}[/bold]: {forces}")
    table = Table(title=f"flag rate per served version ({report['served_topic']})")
    for column in ("version", "windows", "assets", "flag rate"):
        table.add_column(column)
    for version, row in report["by_version"].items():
        table.add_row(version, str(row["windows"]), str(row["assets"]), f"{row['flag_rate']:.2%}")
    out.print(table)
    shadow = report["shadow"]
    if shadow is None:
        out.print(f"no shadow verdicts on {report['shadow_topic']} in this range")
    else:
        table = Table(title=f"served {', '.join(shadow['served_versions'])} against shadow {', '.join(shadow['shadow_versions'])}")
        table.add_column("measure")
        table.add_column("value")
        for key in ("windows_compared", "windows_served_only", "windows_shadow_only", "flag_agreement", "flagged_by_both",
                    "flagged_by_served_only", "flagged_by_shadow_only", "score_pearson", "score_spearman"):
            table.add_row(key.replace("_", " "), "-" if shadow[key] is None else str(shadow[key]))
        out.print(table)
    if "alerts" in report:
        served = ", ".join(f"{v}: {len(a)}" for v, a in report["alerts"]["served"].items()) or "none"
        out.print(f"alerts the policy opens: served {served}; shadow {len(report['alerts']['shadow'])}")
    return 0


def _print_history(history: list[dict[str, Any]], args: argparse.Namespace) -> int:
    rows = [{"tier": c["tier"], "alias": c["alias"], "action": c["action"], "from": c["previous_version"], "to": c["version"],
             "epoch": c["epoch"], "who": c["who"], "why": c["why"], "at_ms": c["at_ms"], "sha256": c["sha256"]} for c in history]
    if args.json:
        print_json(rows)
        return 0
    table = Table(title=f"changes to {args.tier} (models.audit)")
    for column in ("when (UTC)", "alias", "action", "from", "to", "who", "why"):
        table.add_column(column)
    for r in rows:
        when = datetime.fromtimestamp(r["at_ms"] / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, r["alias"], r["action"], r["from"] or "-", r["to"], r["who"], r["why"])
    out.print(table)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="list and show the registry (VIGIL_MODELS); promote, roll back and the history of changes")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list")
    a.add_argument("--tier", default=None)
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("show")
    a.add_argument("tier")
    a.add_argument("version", nargs="?", default=None, help="default: the active one")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("promote", help="make a version the one every worker serves (through models.control)")
    a.add_argument("tier", help="edge, cloud or falls")
    a.add_argument("version")
    a.add_argument("--as", dest="alias", choices=["active", "shadow", "canary"], default="active",
                   help="shadow: scores the same windows to its own topic, nothing acts on it; canary: serves --share of the assets")
    a.add_argument("--share", type=float, default=None, help="share of assets a canary serves, 0-1 (default 0.1)")
    _change_arguments(a)
    a = actions.add_parser("rollback", help="serve the version before the current one again (or --to one)")
    a.add_argument("tier", help="edge, cloud or falls")
    a.add_argument("--to", default=None)
    _change_arguments(a)
    a = actions.add_parser("retire", help="stop serving a tier's shadow or canary")
    a.add_argument("tier", help="edge, cloud or falls")
    a.add_argument("--as", dest="alias", choices=["shadow", "canary"], required=True)
    _change_arguments(a)
    a = actions.add_parser("history", help="every change to a tier: from, to, who, why, when (models.audit)")
    a.add_argument("tier", help="edge, cloud or falls")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("compare", help="active against shadow (same windows) and canary (flag rates), from the topics")
    a.add_argument("tier", help="edge, cloud or falls")
    a.add_argument("--since", default=None, help="event time: a duration before now (30m, 2h, 7d) or an ISO date-time")
    a.add_argument("--until", default=None, help="event time, as --since")
    a.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)


def _change_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--why", required=True, help="the reason, kept in the audit trail")
    parser.add_argument("--who", default=None, help="default: user@host")
    parser.add_argument("--json", action="store_true")
