"""Pump-health topology: pump.vibration.raw / pump.process.raw -> pump.features -> pump.scores.edge.

One module per stage, named after what it consumes: ``vibration`` (raw
waveform chunks), ``process`` (raw process samples), ``edge`` (feature
windows). ``agents`` wires them to Faust.
"""
