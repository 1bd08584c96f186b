"""Topic models.artifacts: registry versions as chunked records, for workers that share no disk with the trainer.

A version travels as its meta.json and its pickled artifact, each cut into
chunks of ``CHUNK_BYTES`` (under the broker's default 1 MB message limit),
keyed ``tier/version/part/index`` on a compacted topic, so every chunk of
every version stays. `vigil models promote` publishes a version's chunks in
the same transaction as its control record: a worker never sees a change
whose artifact is not on the cluster. A worker that lacks the version reads
its chunks back, and installs them only when the bytes hash to the sha256
the metadata names (``ModelRegistry.install``); loading checks it again.

Why a topic and not an object store: vigil's only infrastructure is Kafka,
the edge artifact is 12.4 MB (25 chunks) and the cloud one 44 KB, and the
transaction ties artifact and change together (measured in
``loadtest.bench_model_switch``).
"""
from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from typing import Any

from vigil.models.registry import ModelIntegrityError, ModelRegistry
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings
from vigil.streams.runtime.topics import MODELS_ARTIFACTS, SCHEMA_OF_TOPIC

logger = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
CHUNK_SCHEMA = SCHEMA_OF_TOPIC[MODELS_ARTIFACTS]
PARTS = ("meta", "model")


def artifact_chunks(tier: str, version: str, payload: bytes, metadata: bytes, sha256: str,
                    chunk_bytes: int = CHUNK_BYTES) -> list[tuple[bytes, dict[str, Any]]]:
    """(key, ArtifactChunk record) for every chunk of a version, metadata first.

    >>> [(k, r["index"], r["count"], len(r["data"])) for k, r in artifact_chunks("edge", "v1", b"x" * 5, b"{}", "0" * 64, 2)]
    [(b'edge/v1/meta/0', 0, 1, 2), (b'edge/v1/model/0', 0, 3, 2), (b'edge/v1/model/1', 1, 3, 2), (b'edge/v1/model/2', 2, 3, 1)]
    """
    chunks = []
    for part, data in zip(PARTS, (metadata, payload)):
        count = max(1, -(-len(data) // chunk_bytes))
        for index in range(count):
            chunks.append((f"{tier}/{version}/{part}/{index}".encode(),
                           {"tier": tier, "version": version, "part": part, "index": index, "count": count, "sha256": sha256,
                            "data": data[index * chunk_bytes : (index + 1) * chunk_bytes]}))
    return chunks


def assemble(records: list[dict[str, Any]]) -> dict[str, bytes] | str:
    """{part: bytes} from one version's chunks, or why they do not make a whole version.

    >>> chunks = [r for _, r in artifact_chunks("edge", "v1", b"abcde", b"{}", "0" * 64, 2)]
    >>> assemble(chunks)
    {'meta': b'{}', 'model': b'abcde'}
    >>> assemble(chunks[:-1])
    'model: 2 of 3 chunks on the topic'
    """
    parts: dict[str, dict[int, bytes]] = defaultdict(dict)
    counts: dict[str, int] = {}
    for record in records:
        parts[record["part"]][record["index"]] = record["data"]
        counts[record["part"]] = record["count"]
    for part in PARTS:
        if len(parts[part]) != counts.get(part, -1):
            return f"{part}: {len(parts[part])} of {counts.get(part, '?')} chunks on the topic"
    return {part: b"".join(parts[part][i] for i in range(counts[part])) for part in PARTS}


def version_chunks(registry: ModelRegistry, tier: str, version: str) -> list[tuple[bytes, dict[str, Any]]]:
    payload, metadata = registry.files(tier, version)
    return artifact_chunks(tier, version, payload, metadata, json.loads(metadata)["sha256"])


def fetch_artifact(settings: Settings, registry: ModelRegistry, tier: str, version: str, codec: AvroCodec | None = None,
                   timeout_s: float = 60.0) -> str | None:
    """Install a version from models.artifacts into ``registry``; None once installed, else why not.
    Raises ModelIntegrityError when the chunks are all there but do not hash to their metadata's sha256."""
    from vigil.streams.lifecycle.control import read_to_end

    codec = codec or AvroCodec()
    prefix = f"{tier}/{version}/".encode()
    start = time.monotonic()
    records = [codec.decode(r.value, CHUNK_SCHEMA) for r in read_to_end(settings, MODELS_ARTIFACTS, timeout_s)
               if r.key is not None and r.key.startswith(prefix)]
    if not records:
        return f"{tier} {version} is not on {settings.topic(MODELS_ARTIFACTS)} either"
    parts = assemble(records)
    if isinstance(parts, str):
        return f"{tier} {version} is incomplete on {settings.topic(MODELS_ARTIFACTS)}: {parts}"
    try:
        registry.install(tier, version, parts["model"], parts["meta"])
    except ModelIntegrityError as exc:
        raise ModelIntegrityError(f"from {settings.topic(MODELS_ARTIFACTS)}: {exc}") from None
    logger.info("model fetched from the cluster", extra={
        "tier": tier, "version": version, "bytes": len(parts["model"]), "seconds": round(time.monotonic() - start, 3)})
    return None
