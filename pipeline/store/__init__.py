"""The Zarr store: its schema (:mod:`.schema`), finding arrays (:mod:`.arrays`), making and
opening it (:mod:`.access`), its run-dependent axes (:mod:`.axes`), a task's handle
(:mod:`.view`), map encodings (:mod:`.encoding`) and chunk locks (:mod:`.locks`)."""
