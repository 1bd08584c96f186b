"""vigil: pump health and fall detection on Kafka.

One import name for the project's folders (see setup.py):

- ``vigil.streams``: the Faust application, topologies, CLI, demo, evaluation and development tools;
- ``vigil.models``: pure computation (features, scorers, thresholds, registry), no Kafka imports;
- ``vigil.schemas``: the Avro schemas of every topic.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vigil")
except PackageNotFoundError:  # pragma: no cover - running from a checkout that was never installed
    __version__ = "0+unknown"
