"""``xai report``: the check that the run's config builds a report, and opening it."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError
from workflows.config.run_config import Config


def check_report_enabled(cfg: Config) -> None:
    """A :class:`ConfigError` saying how to turn the report on when ``[report] enabled`` is
    false."""
    if not cfg.report.enabled:
        raise ConfigError(f"{cfg.source}: [report] enabled = false turns the report off; "
                          "set it to true (or pass --set report.enabled=true).")


def report_page(run_dir: Path) -> Path:
    """The report's first page in the run folder."""
    return run_dir / "report" / "index.html"


def open_in_browser(page: Path) -> bool:
    """Open ``page`` in the default browser; False when none could be started."""
    import webbrowser

    return webbrowser.open(page.resolve().as_uri())
