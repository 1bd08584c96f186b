"""Stage state kept in a changelog-backed Faust table, as bytes.

Faust picks a changelog partition from the event being processed; a batch
mixes partitions, so writes here name the partition explicitly: the input
partition the asset's records came from. The worker that owns that input
partition after a rebalance is the one that recovers the state.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, Mapping, Protocol, TypeVar


class StateValue(Protocol):
    def to_bytes(self) -> bytes: ...


S = TypeVar("S", bound=StateValue)


class TableState(Mapping[str, S], Generic[S]):
    def __init__(self, table: Any, decode: Callable[[bytes], S]) -> None:
        self.table = table
        self.decode = decode

    def __getitem__(self, key: str) -> S:
        raw = self.table.data.get(key)
        if raw is None:
            raise KeyError(key)
        return self.decode(raw)

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.table.data.get(key)
        return default if raw is None else self.decode(raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.data.keys())

    def __len__(self) -> int:
        return len(self.table.data)

    def write(self, updates: Mapping[str, S], partitions: Mapping[str, int]) -> None:
        for key, value in updates.items():
            raw = value.to_bytes()
            self.table.data[key] = raw
            self.table.send_changelog(partitions[key], key, raw)
