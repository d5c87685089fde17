"""The static HTML report: a folder that opens from the disk (``file://``) with no server and
no network, every path in it relative, so it can be moved or zipped.

``index.html``
    the gallery (:mod:`~pipeline.report.gallery_page`; ``assets/gallery.js`` fills it): one
    card per image, sorted and filtered in the page.
``summary.html``
    which method to trust, the sanity check, the run's facts and plots
    (:mod:`~pipeline.report.summary_page`, the verdicts in words from
    :mod:`~pipeline.report.verdicts`, the run table from :mod:`~pipeline.report.run_facts`).
``strategies.html``
    the explanation strategies (:mod:`~pipeline.report.strategies_page`).
``data/*.js``
    the data, as JSON in scripts (:mod:`~pipeline.report.data_scripts`).
``img/``
    crops, grey-level maps and mask outlines as sprites, a shard's tiles a file
    (:mod:`~pipeline.report.sprites`, their files :mod:`~pipeline.report.tile_files`).

The pages' HTML is Jinja2 templates (``pipeline/resources/report/templates``, autoescape on;
:mod:`~pipeline.report.templating`). The folder is published in one step
(:mod:`~pipeline.report.publishing`): a reader sees the old report or the new one.
"""
