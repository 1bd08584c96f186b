"""The vigil Faust application: settings, topics, codec, stages and agents, CLI.

Stage logic lives in plain classes that take a list of records and return
a list of records (``streams.pumps.vibration``, ``.process``, ``.edge``);
the agents in ``streams.pumps.agents`` are thin loops around them.
"""
