"""The development broker: real Apache Kafka (KRaft) when Java >= 17 and Maven (or a warm cache) are
there, else the embedded noida-db, with one line saying what was missing.

`vigil broker`, `vigil demo`, the test fixtures and the benchmarks all start their broker here,
so they run on what users run in production whenever this machine can. ``VIGIL_DEV_BROKER``
(``auto``, ``kafka`` or ``noida``) overrides the choice; ``kafka`` fails instead of falling back.

>>> broker_kind_requested({"VIGIL_DEV_BROKER": "noida"})
'noida'
>>> broker_kind_requested({})
'auto'
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping, Protocol

from vigil.streams.devtools.kafka import KafkaCluster, KafkaUnavailable, find_java, resolve_kafka
from vigil.streams.devtools.noida import EmbeddedBroker

logger = logging.getLogger(__name__)

BrokerKind = Literal["auto", "kafka", "noida"]
KINDS: tuple[BrokerKind, ...] = ("auto", "kafka", "noida")
APACHE_KAFKA = "apache-kafka"
NOIDA_DB = "noida-db"


class DevBroker(Protocol):
    """What the demo, the CLI and the tests use of either broker."""

    @property
    def bootstrap(self) -> str: ...

    @property
    def url(self) -> str: ...

    def start(self) -> "DevBroker": ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BrokerChoice:
    name: str  # APACHE_KAFKA or NOIDA_DB: what `vigil demo --json` reports as "broker"
    notice: str | None  # one line for people when the fallback was taken


def broker_kind_requested(environ: Mapping[str, str] | None = None) -> BrokerKind:
    value = (os.environ if environ is None else environ).get("VIGIL_DEV_BROKER", "auto").strip().lower() or "auto"
    if value not in KINDS:
        raise ValueError(f"VIGIL_DEV_BROKER must be one of {', '.join(KINDS)}, got {value!r}")
    return value  # type: ignore[return-value]


def choose_broker(kind: BrokerKind = "auto") -> BrokerChoice:
    """Apache Kafka unless ``kind`` is noida or Kafka cannot run here (then noida-db, with the reason).

    Resolving Kafka's jars is part of the check: a cold cache runs Maven once (about 7-17 s),
    a warm one costs nothing, so a missing Maven only matters before the first run.
    """
    if kind == "noida":
        return BrokerChoice(NOIDA_DB, None)
    try:
        find_java()
        resolve_kafka()
    except KafkaUnavailable as exc:
        if kind == "kafka":
            raise
        reason = str(exc).splitlines()[0]
        return BrokerChoice(NOIDA_DB, f"Apache Kafka cannot run here ({reason}); using the embedded noida-db broker instead")
    return BrokerChoice(APACHE_KAFKA, None)


def make_broker(choice: BrokerChoice, *, nodes: int = 1, data_dir: str | Path | None = None, port: int | None = None) -> DevBroker:
    """An unstarted broker of the chosen kind; noida-db runs one node only."""
    if choice.name == NOIDA_DB:
        if nodes != 1:
            raise ValueError(f"noida-db runs one node; a {nodes}-node cluster needs Apache Kafka ({choice.notice or 'requested noida'})")
        return EmbeddedBroker(port=port, data_dir=data_dir)
    if port:
        raise ValueError("Apache Kafka picks free ports for each node; --port applies to noida-db only")
    return KafkaCluster(nodes=nodes, data_dir=data_dir)


def start_dev_broker(
    *, kind: BrokerKind | None = None, nodes: int = 1, data_dir: str | Path | None = None, port: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[DevBroker, BrokerChoice]:
    """Choose, build and start a development broker; the fallback notice goes to ``notify`` (stderr by default)."""
    choice = choose_broker(kind or broker_kind_requested())
    if choice.notice:
        (notify or (lambda line: print(line, file=sys.stderr, flush=True)))(choice.notice)
        logger.warning("broker fallback", extra={"broker": choice.name, "reason": choice.notice})
    broker = make_broker(choice, nodes=nodes, data_dir=data_dir, port=port)
    broker.start()
    return broker, choice
