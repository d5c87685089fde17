"""The tables of an HTML page, for the report's tests."""

from __future__ import annotations

from html.parser import HTMLParser


class _Tables(HTMLParser):
    """Every ``<table>`` of a page as rows of ``(tag, attrs, text)`` cells, with each row's
    attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[tuple[dict, list[tuple[str, dict, str]]]]] = []
        self._cell: list | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append((dict(attrs), []))
        elif tag in ("td", "th") and self.tables and self.tables[-1]:
            self._cell = [tag, dict(attrs), ""]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1][1].append((self._cell[0], self._cell[1], self._cell[2].strip()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[2] += data


def _tables(text: str) -> list:
    parser = _Tables()
    parser.feed(text)
    return parser.tables

