"""Classifiers: the architecture registry, checkpoints and their identity, loading, and the
evidence model."""
