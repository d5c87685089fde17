"""The quadrature rules of the path integral in Integrated Gradients (names only: no torch).

``seed``: the seed's mean of the gradients at ``linspace(0, 1, m)``; ``trapezoid``;
``gausslegendre``: Captum's default. The rules themselves live in
:mod:`pipeline.custom_explainers`.
"""

QUADRATURE_RULES: tuple[str, ...] = ("seed", "trapezoid", "gausslegendre")
