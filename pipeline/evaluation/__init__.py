"""Attribution-quality metrics (the metric registry) and SpRAy strategy clustering."""
