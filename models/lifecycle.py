"""What a model change may say, which change is current, and where a rollback goes.

A change points an alias of a tier (``active`` of ``edge``) at a registry
version. Changes travel as records (``models.control``, ``models.audit``);
these functions judge them without touching Kafka or the disk.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable, Mapping, Sequence

from vigil.models.registry import CLOUD_TIER, EDGE_TIER, FALL_TIER

TOPOLOGY_OF_TIER = {EDGE_TIER: "pumps", CLOUD_TIER: "pumps", FALL_TIER: "falls"}
ALIASES = ("active", "shadow", "canary")
# retire ends a shadow or a canary (the active model can only be replaced).
ACTIONS = ("promote", "rollback", "retire")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def control_key(tier: str, alias: str = "active") -> str:
    """The models.control key of a tier's alias.

    >>> control_key("edge")
    'pumps|edge|active'
    """
    return f"{TOPOLOGY_OF_TIER.get(tier, 'unknown')}|{tier}|{alias}"


def change_problem(change: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, detail) when a change cannot be applied as it stands, else None.

    >>> ok = {"topology": "pumps", "tier": "edge", "alias": "active", "action": "promote", "version": "edge-1", "sha256": "0" * 64, "share": 1.0}
    >>> change_problem(ok) is None
    True
    >>> change_problem({**ok, "share": 1.5})
    ('share_out_of_range', 'share 1.5 is outside 0-1')
    >>> change_problem({**ok, "alias": "champion"})[0]
    'unknown_alias'
    >>> change_problem({**ok, "action": "retire"})[0]
    'unknown_action'
    """
    tier, alias = change.get("tier"), change.get("alias")
    if tier not in TOPOLOGY_OF_TIER:
        return "unknown_tier", f"tier {tier!r} is none of {sorted(TOPOLOGY_OF_TIER)}"
    if change.get("topology") != TOPOLOGY_OF_TIER[tier]:
        return "unknown_tier", f"tier {tier!r} belongs to topology {TOPOLOGY_OF_TIER[tier]!r}, not {change.get('topology')!r}"
    if alias not in ALIASES:
        return "unknown_alias", f"alias {alias!r} is none of {list(ALIASES)}"
    if change.get("action") not in ACTIONS:
        return "unknown_action", f"action {change.get('action')!r} is none of {list(ACTIONS)}"
    if change.get("action") == "retire" and alias == "active":
        return "unknown_action", "the active model cannot be retired, only replaced (promote or roll back)"
    share = change.get("share")
    if not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        return "share_out_of_range", f"share {share!r} is outside 0-1"
    if not change.get("version"):
        return "unknown_version", "no version named"
    if not _SHA256.fullmatch(str(change.get("sha256", ""))):
        return "bad_sha256", f"sha256 {change.get('sha256')!r} is not 64 lowercase hex digits"
    return None


def canary_position(asset_id: str) -> float:
    """Where an asset falls in [0, 1): a hash of its id, the same in every worker, process and run.

    >>> canary_position("pump-001") == canary_position("pump-001")
    True
    >>> 0.0 <= canary_position("pump-001") < 1.0
    True
    """
    digest = hashlib.blake2b(asset_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_canary(asset_id: str, share: float) -> bool:
    """Whether a canary with ``share`` of the assets serves this one. Growing the share only adds assets:
    a pump on the canary at 10 % stays on it at 20 %.

    >>> in_canary("pump-001", 0.0), in_canary("pump-001", 1.0)
    (False, True)
    >>> sum(in_canary(f"pump-{i:03d}", 0.25) for i in range(1000))
    269
    """
    return canary_position(asset_id) < share


def current_changes(changes: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The change in force per control key: the highest epoch, the later one on a tie (as compaction keeps).

    >>> current = current_changes([{"tier": "edge", "alias": "active", "version": "a", "epoch": 2},
    ...                            {"tier": "edge", "alias": "active", "version": "b", "epoch": 1}])
    >>> current["pumps|edge|active"]["version"]
    'a'
    """
    current: dict[str, Mapping[str, Any]] = {}
    for change in changes:
        key = control_key(change["tier"], change["alias"])
        if key not in current or change["epoch"] >= current[key]["epoch"]:
            current[key] = change
    return current


def rollback_target(history: Sequence[Mapping[str, Any]], current: str) -> str | None:
    """The version a rollback from ``current`` returns to, from the alias's changes oldest first.

    Promotions push, rollbacks pop back to the version they restored, so repeated rollbacks walk
    further back through the promotions instead of flipping between the last two.

    >>> h = [{"action": "promote", "version": v} for v in ("a", "b", "c")]
    >>> rollback_target(h, "c")
    'b'
    >>> rollback_target(h + [{"action": "rollback", "version": "b"}], "b")
    'a'
    >>> rollback_target([{"action": "promote", "version": "a"}], "a") is None
    True
    """
    stack: list[str] = []
    for entry in history:
        if entry["action"] == "rollback":
            while stack and stack[-1] != entry["version"]:
                stack.pop()
            if not stack:
                stack.append(entry["version"])
        else:
            stack.append(entry["version"])
    while stack and stack[-1] == current:
        stack.pop()
    return stack[-1] if stack else None


def active_version_at(history: Iterable[Mapping[str, Any]], tier: str, at_ms: int) -> str | None:
    """The version ``tier``'s active alias pointed at, at ``at_ms``, from ``models.audit`` (every change, any order).

    Before the first change it is the version that change replaced (``previous_version``); None when the
    audit says nothing about the tier, or a change names no version it replaced.

    >>> h = [{"tier": "edge", "alias": "active", "version": "b", "previous_version": "a", "epoch": 1, "at_ms": 100},
    ...      {"tier": "edge", "alias": "active", "version": "c", "previous_version": "b", "epoch": 2, "at_ms": 200},
    ...      {"tier": "edge", "alias": "shadow", "version": "z", "previous_version": None, "epoch": 1, "at_ms": 150}]
    >>> [active_version_at(h, "edge", t) for t in (50, 100, 199, 500)], active_version_at(h, "cloud", 500)
    (['a', 'b', 'b', 'c'], None)
    """
    changes = sorted((c for c in history if c["tier"] == tier and c["alias"] == "active"), key=lambda c: (c["at_ms"], c["epoch"]))
    before = [c for c in changes if c["at_ms"] <= at_ms]
    if before:
        return before[-1]["version"]
    return changes[0].get("previous_version") if changes else None
