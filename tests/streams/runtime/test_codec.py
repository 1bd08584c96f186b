import json
import struct

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from vigil import schemas
from vigil.streams.runtime.codec import AvroCodec, DecodeError, ManifestSchemaIds, RegistrySchemaIds

CHUNK = {
    "asset_id": "pump-7",
    "seq": 42,
    "ts_ms": 1_767_225_600_000,
    "fs_hz": 5120.0,
    "rpm": 1780.0,
    "channel": "h",
    "samples": struct.pack("<3f", 0.5, -0.25, 1.0),
}
VIBRATION = "vigil.pumps.VibrationChunk"


@pytest.fixture(params=["manifest", "registry"])
def codec(request):
    if request.param == "manifest":
        return AvroCodec(ManifestSchemaIds())
    return AvroCodec(RegistrySchemaIds("mock://vigil-tests"))


def test_round_trip_with_confluent_framing(codec):
    data = codec.encode("pump.vibration.raw", VIBRATION, CHUNK)
    assert data[0] == 0
    assert codec.decode(data, VIBRATION) == CHUNK


def test_manifest_ids_are_the_fixed_ones_in_schemas():
    data = AvroCodec().encode("any.topic", VIBRATION, CHUNK)
    assert struct.unpack(">I", data[1:5])[0] == schemas.latest(VIBRATION).id == 1


def test_registry_ids_come_from_the_registry_under_the_topic_subject():
    client = SchemaRegistryClient.new_client({"url": "mock://ids"})
    codec = AvroCodec(RegistrySchemaIds(client))
    data = codec.encode("pump.vibration.raw", VIBRATION, CHUNK)
    schema_id = struct.unpack(">I", data[1:5])[0]
    registered = client.get_latest_version("pump.vibration.raw-value")
    assert registered.schema_id == schema_id
    assert json.loads(registered.schema.schema_str)["name"] == "VibrationChunk"


def test_reads_what_confluent_avro_serializer_writes():
    client = SchemaRegistryClient.new_client({"url": "mock://interop"})
    serializer = AvroSerializer(client, json.dumps(schemas.latest(VIBRATION).schema))
    data = serializer(CHUNK, SerializationContext("pump.vibration.raw", MessageField.VALUE))
    assert AvroCodec(RegistrySchemaIds(client)).decode(data, VIBRATION) == CHUNK


def test_an_older_writer_schema_is_resolved_to_the_current_one():
    # A producer still on a schema without rpm and channel (both have defaults now).
    old = {k: v for k, v in schemas.latest(VIBRATION).schema.items()}
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("rpm", "channel")]
    client = SchemaRegistryClient.new_client({"url": "mock://evolution"})
    data = AvroSerializer(client, json.dumps(old))(
        {k: v for k, v in CHUNK.items() if k not in ("rpm", "channel")}, SerializationContext("t", MessageField.VALUE)
    )
    record = AvroCodec(RegistrySchemaIds(client)).decode(data, VIBRATION)
    assert record["rpm"] is None and record["channel"] == "x" and record["samples"] == CHUNK["samples"]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "undecodable"),
        (b"\x00\x00\x00", "undecodable"),
        (b"\x01\x00\x00\x00\x01" + b"\x00" * 20, "undecodable"),  # wrong magic byte
        (b"\x00\x00\x0f\x42\x3f" + b"\x00" * 20, "unknown_schema_id"),
    ],
)
def test_decode_errors_carry_a_reason(data, reason):
    with pytest.raises(DecodeError) as info:
        AvroCodec().decode(data, VIBRATION)
    assert info.value.reason == reason


def test_truncated_body_and_trailing_bytes_are_undecodable():
    good = AvroCodec().encode("t", VIBRATION, CHUNK)
    for bad in (good[:-3], good + b"\x00\x01"):
        with pytest.raises(DecodeError) as info:
            AvroCodec().decode(bad, VIBRATION)
        assert info.value.reason == "undecodable"


def test_another_record_type_is_a_schema_mismatch():
    data = AvroCodec().encode("t", "vigil.pumps.ProcessSample", {"asset_id": "a", "seq": 1, "ts_ms": 2})
    with pytest.raises(DecodeError) as info:
        AvroCodec().decode(data, VIBRATION)
    assert info.value.reason == "schema_mismatch"


def test_registered_as_a_faust_codec():
    from faust.serializers import codecs

    from vigil.streams.runtime.codec import register_faust_codecs

    names = register_faust_codecs(AvroCodec(), {"pump.vibration.raw": VIBRATION})
    data = codecs.dumps(names["pump.vibration.raw"], CHUNK)
    assert data == AvroCodec().encode("pump.vibration.raw", VIBRATION, CHUNK)
    assert codecs.loads(names["pump.vibration.raw"], data) == CHUNK
