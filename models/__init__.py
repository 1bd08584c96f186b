"""Pure computation for vigil: features, scorers, simulation, model artifacts.

Nothing here imports Kafka or Faust: every function can be trained,
evaluated and tested without a broker, and the stream agents in
``streams/`` call these same functions, so an offline number is the number
the stream produces.

Scorers follow one contract (batch-first, since the hot path is batched):
``fit(X) -> self`` and ``score_many(X) -> ndarray`` with higher = more anomalous.
"""
