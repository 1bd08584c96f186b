"""The model lifecycle on the stream: changes on ``models.control`` and ``models.audit``, and the
worker-side watcher that swaps models between batches."""
