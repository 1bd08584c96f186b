"""A simulated wearer's device: answers fall.confirm_request on wearable.user_response.

Each request is answered "I'm OK" with probability ``ok_probability``, "HELP"
with ``help_probability``, and otherwise not at all (the wearer cannot
answer), after ``delay_s``. The choice is a deterministic function of the
request id and the seed, so a re-sent request gets the same treatment and is
answered once.
"""
from __future__ import annotations

import hashlib
import heapq
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import FALL_CONFIRM_REQUEST, SCHEMA_OF_TOPIC, WEARABLE_USER_RESPONSE


@dataclass(frozen=True)
class ResponderPolicy:
    ok_probability: float = 0.5
    help_probability: float = 0.0
    delay_s: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.ok_probability and 0 <= self.help_probability and self.ok_probability + self.help_probability <= 1):
            raise ValueError("need 0 <= ok_probability, help_probability and their sum <= 1")
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s}")

    def answer(self, request_id: str) -> str | None:
        """OK, HELP or None (no answer) for this request; the same every time it is asked."""
        digest = hashlib.sha256(f"{self.seed}:{request_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        if u < self.ok_probability:
            return "OK"
        if u < self.ok_probability + self.help_probability:
            return "HELP"
        return None


@dataclass
class Responder:
    """Answers requests: ``run`` consumes them itself (`vigil respond`); ``offer`` and ``send_due`` let a
    caller that already reads the request topic drive it (the demo, to spare the broker another consumer)."""

    settings: Settings
    codec: AvroCodec
    policy: ResponderPolicy = field(default_factory=ResponderPolicy)
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0, "duplicates": 0, "OK": 0, "HELP": 0, "silent": 0})
    answered: dict[str, str | None] = field(default_factory=dict)  # request id -> the answer given (None: silent)
    _due: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, should_stop: Callable[[], bool], *, from_beginning: bool = False, on_answer: Callable[[dict[str, Any]], None] | None = None) -> dict[str, int]:
        """Answer requests until ``should_stop()``; answers still waiting for their delay are sent first."""
        from confluent_kafka import Consumer

        consumer = Consumer(self.settings.reader_config(f"{self.settings.group_id}-responder", from_beginning=from_beginning))
        consumer.subscribe([self.settings.topic(FALL_CONFIRM_REQUEST)])
        try:
            self.answer_until(should_stop, consumer=consumer, on_answer=on_answer)
        finally:
            consumer.close()
        return self.stats

    def answer_until(self, should_stop: Callable[[], bool], *, consumer: Any = None,
                     on_answer: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Send answers as they fall due (reading requests from ``consumer`` if given) until ``should_stop()``
        and nothing is left to send."""
        from vigil.streams.devtools.producer import RecordProducer

        producer = RecordProducer(self.settings, self.codec)
        while not should_stop() or self._due:
            if consumer is not None and not should_stop():
                for msg in consumer.consume(100, timeout=0.1):
                    if msg.error() is None:
                        self.offer(self.codec.decode(msg.value(), SCHEMA_OF_TOPIC[FALL_CONFIRM_REQUEST]))
            else:
                time.sleep(0.05)
            for answer in self.pop_due():
                producer.send_record(WEARABLE_USER_RESPONSE, answer["wearer_id"], answer)
                producer.flush()
                if on_answer is not None:
                    on_answer(answer)
        producer.close()

    def offer(self, request: dict[str, Any]) -> None:
        """A request seen on fall.confirm_request: decide the answer, and when to send it."""
        rid = request["request_id"]
        with self._lock:
            if rid in self.answered:
                self.stats["duplicates"] += 1
                return
            self.stats["requests"] += 1
            answer = self.policy.answer(rid)
            self.answered[rid] = answer
            if answer is None:
                self.stats["silent"] += 1
                return
            self.stats[answer] += 1
            heapq.heappush(self._due, (time.monotonic() + self.policy.delay_s, rid,
                                       {"request_id": rid, "wearer_id": request["wearer_id"], "ts_ms": 0, "response": answer}))

    def pop_due(self) -> list[dict[str, Any]]:
        """Answers whose delay has passed, stamped with the time they are sent."""
        out = []
        with self._lock:
            while self._due and self._due[0][0] <= time.monotonic():
                _, _, answer = heapq.heappop(self._due)
                answer["ts_ms"] = int(time.time() * 1000)
                out.append(answer)
        return out
