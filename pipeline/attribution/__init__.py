"""Attribution methods: the method registry, one module per method (each registering itself
beside its code), the gradient and path engines, adaptive Integrated Gradients, baselines,
map post-processing, and the engine internals (memory planner, affine stem, precision, speed
options).

Importing the package loads every method's module, in the order of
:data:`~pipeline.attribution.method_registry.METHODS`; none imports torch until a method runs. A
new method is one module that ends with ``METHODS.add(...)``, and its line here.
"""

# The order of these imports is the order of the registry.
# isort: off
from pipeline.attribution import (  # noqa: F401  (each module registers its methods)
    gradient,
    integrated_gradients,
    smoothgrad,
    from_scratch,
    input_x_gradient,
    cam,
    propagation,
)
# isort: on
