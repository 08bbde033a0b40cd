"""Real processes, namespaces and databases for the demo, e2e tests and benchmarks."""
