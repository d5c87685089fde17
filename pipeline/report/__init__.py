"""The static HTML report: pages, their assets, and publishing the report folder."""
