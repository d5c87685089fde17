"""Publishing the report's folder: whole, or not at all."""

from __future__ import annotations

from pathlib import Path

from pipeline.report import publishing


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "index.html").write_text(text)
    return path


def test_publish_replaces_the_folder_whole(tmp_path: Path) -> None:
    target = _folder(tmp_path / "report", "old")
    build = publishing.build_folder(target)
    (build / "index.html").write_text("new")
    publishing.publish(build, target)
    assert (target / "index.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_publish_without_an_atomic_exchange(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(publishing, "_exchange", lambda a, b: False)
    target = _folder(tmp_path / "report", "old")
    build = publishing.build_folder(target)
    (build / "index.html").write_text("new")
    publishing.publish(build, target)
    assert (target / "index.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_recover_puts_the_old_report_back_after_a_crash_between_renames(tmp_path: Path) -> None:
    target = tmp_path / "report"
    _folder(publishing.old_path(target), "old")          # renamed away, the new one never arrived
    _folder(tmp_path / ".report.build-123", "half")  # a build killed half-way
    publishing.recover(target)
    assert (target / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_link_tree_links_every_file_but_temporaries(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "x.png").write_bytes(b"x")
    (src / "a" / ".x.png.tmp").write_bytes(b"torn")
    assert publishing.link_tree(src, tmp_path / "dst") == 1
    assert (tmp_path / "dst" / "a" / "b" / "x.png").read_bytes() == b"x"
    assert not (tmp_path / "dst" / "a" / ".x.png.tmp").exists()
