"""Classifiers: the model sources (:mod:`pipeline.models.sources`), architectures by name and
their one builder, preprocessing, class names, torchvision's published checkpoints and their
identity, loading, and the evidence model."""
