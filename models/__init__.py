"""Domain-agnostic machinery: generation engine, search, reward models, registry."""
