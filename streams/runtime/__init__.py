"""What both topologies run on: the Faust app factory, settings, topics, the Avro codec, the stage
contract (records in, outputs, dead letters and state out), the agent loop, delivery order,
changelog-backed state, validation with its dead-letter reasons, metrics and structured logs."""
