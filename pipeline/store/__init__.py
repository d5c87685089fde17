"""The Zarr store: its schema, creation and access, map encodings, and chunk locks."""
