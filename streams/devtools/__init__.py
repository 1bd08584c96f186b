"""Development tools: the embedded broker for the demo and tests, producers that publish simulated
fleets and packs, and malformed copies of valid records for dead-letter tests."""
