import pytest

from vigil.streams.runtime.settings import BrokerNotConfigured, Settings, parse_broker_url


def test_parse_broker_url_forms():
    assert parse_broker_url("kafka://a:9092") == ["a:9092"]
    assert parse_broker_url("kafka://a:9092,b:9093") == ["a:9092", "b:9093"]
    assert parse_broker_url("a:1, kafka://b:2") == ["a:1", "b:2"]
    for bad in ("http://a:1", "kafka://", "kafka://a", "kafka://a:x"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)


def test_no_broker_says_how_to_get_one():
    settings = Settings.from_env({})
    with pytest.raises(BrokerNotConfigured, match="vigil broker"):
        settings.bootstrap_servers


def test_security_settings_pass_through_to_confluent_clients():
    settings = Settings.from_env(
        {
            "VIGIL_BROKER": "kafka://k1:9093,k2:9093",
            "VIGIL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "VIGIL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "VIGIL_KAFKA_SASL_USERNAME": "vigil",
            "VIGIL_KAFKA_SASL_PASSWORD": "s3cret",
        }
    )
    conf = settings.confluent_config(**{"group.id": "g"})
    assert conf == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "vigil",
        "sasl.password": "s3cret",
        "group.id": "g",
    }
    credentials, ssl_context = settings.faust_credentials()
    assert credentials.username == "vigil" and ssl_context is not None
    assert settings.broker_urls == ["kafka://k1:9093", "kafka://k2:9093"]


def test_bad_values_are_refused_with_the_variable_name():
    with pytest.raises(ValueError, match="VIGIL_PARTITIONS"):
        Settings.from_env({"VIGIL_PARTITIONS": "many"})
    with pytest.raises(ValueError, match="VIGIL_KAFKA_SECURITY_PROTOCOL"):
        Settings.from_env({"VIGIL_KAFKA_SECURITY_PROTOCOL": "TLS"})


def test_topic_prefix():
    assert Settings.from_env({"VIGIL_TOPIC_PREFIX": "t1."}).topic("pump.features") == "t1.pump.features"


def test_to_env_round_trips():
    settings = Settings.from_env({"VIGIL_BROKER": "kafka://a:1", "VIGIL_PARTITIONS": "3", "VIGIL_MODELS": "/srv/models", "VIGIL_WORKER_DATA_DIR": "/srv/worker",
                                  "VIGIL_KAFKA_SECURITY_PROTOCOL": "SSL", "VIGIL_BATCH_WITHIN_S": "0.2"})
    assert Settings.from_env(settings.to_env()) == settings
