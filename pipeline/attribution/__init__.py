"""Attribution methods: the method registry, the gradient and path engines, adaptive IG,
baselines, CAM, propagation rules, map post-processing, and the engine internals (memory
planner, affine stem, precision, speed options)."""
