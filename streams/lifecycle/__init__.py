"""The model lifecycle on the stream: changes on ``models.control`` and ``models.audit`` (``control``), artifacts on
``models.artifacts`` (``artifacts``), the worker-side watcher that swaps models between batches (``watcher``),
active against shadow and canary (``compare``), and retraining from ``pump.features`` (``retrain``)."""
