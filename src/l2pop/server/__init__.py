"""The l2pop server: use-cases over the store, the REST API and the agent channel."""
