"""Typed, frozen run configuration, validated on load."""
