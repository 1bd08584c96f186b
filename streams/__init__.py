"""The vigil Faust application (installed as ``vigil.streams``), one sub-package per job:

- ``runtime``: app factory, settings, topics, Avro codec, the stage contract and agent loop,
  delivery order, changelog tables, validation and dead-letter reasons, metrics, logs;
- ``pumps``: the pump-health topology, one module per stage named after its input topic,
  its in-process replay (``offline``) and its one training path (``training``);
- ``falls``: the fall-detection topology, laid out the same way;
- ``cli``: the ``vigil`` command, one module per command group;
- ``demo``: ``vigil demo``, its read-back, and its HTML report;
- ``evaluation``: the published protocols behind ``vigil evaluate`` and docs/evaluation.md;
- ``devtools``: the embedded broker, simulated producers and malformed-record generator.

Stage logic lives in plain classes that take a list of records and return a list of
records; the agents are thin loops around them, so the offline evaluators and the live
workers run the same code.
"""
