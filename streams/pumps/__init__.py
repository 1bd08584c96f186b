"""Pump-health topology: pump.vibration.raw / pump.process.raw -> pump.features -> pump.scores.edge
-> pump.scores.cloud -> alerts, pump.trends.

One module per stage, named after the topic it consumes or produces: ``vibration`` and
``process`` (raw -> pump.features), ``edge`` (pump.scores.edge), ``cloud`` (pump.scores.cloud),
``alerts`` (alerts), ``trends`` (pump.trends). ``agents`` wires them to Faust; ``offline``
runs them in-process; ``training`` is the one way both tiers are fitted (``training_config`` holds its settings); ``run_to_failure``
reads PRONOSTIA-layout packs for training, evaluation and the demo.
"""
