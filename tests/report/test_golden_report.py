"""The report today's code builds from a run made by commit 6338a7c is that commit's report.

``tests/fixtures/existing_runs/runs/defaults`` (its README.md says how it was made) holds the
report the code of 6338a7c built, ``report/`` and its per-image parts ``report-parts/``. The
test copies the run elsewhere, clears the report stage with ``xai clean RUN_DIR report``,
rebuilds it with ``xai report RUN_DIR`` and compares every file with the fixture's: the same
bytes, the pages' HTML included, except where :data:`PAGE_EXCEPTIONS` says. Everything the
report shows comes from the run folder, and the environment is the one the fixture was made
in (its versions are in the run's ``config.resolved.json``, and the summary page lists them),
so any other difference is a change of the report: a template, a number's format, a plot.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.workflow_helpers import cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "existing_runs"
RUN = "defaults"
#: What the report stage writes in a run folder.
REPORT_FOLDERS = ("report", "report-parts")
SCHEDULER = ("--scheduler", "synchronous")  # as the fixture's run was made

#: Where a rebuilt page may differ from the fixture's, and why. Each is applied to one page
#: only, and each replaces one exact anchored value (see :func:`expected_page`); everything
#: else is compared byte for byte.
PAGE_EXCEPTIONS = {
    "apostrophe": "Jinja2 escapes ' as &#39; where the hand-written HTML of 6338a7c wrote "
                  "&#x27; (the same character to every browser)",
    "config hash": "summary.html shows the store's config hash, which covers the config's "
                   "absolute paths (the images, the output folder, the config file read): "
                   "the copy lives elsewhere than the run that was made, so `xai report` "
                   "records a new hash; the page must show that one",
    "config file": "summary.html names the config file the command read: the fixture's report "
                   "was built by `xai run --config <folder>/defaults.toml`, this one by "
                   "`xai report RUN_DIR`, which reads the run's saved config.toml",
    "strategies pairs": "report.css lays each cluster member's photo and its map side by side "
                        "on the strategies page (a .pair per member, the colormap filter on "
                        "its .maps), where the fixture's stylesheet had a row of photos and a "
                        "row of maps: the rules of :data:`_STRATEGIES_CSS` replace the old "
                        "ones (the fixture's strategies.html clusters nothing, so its page is "
                        "unchanged)",
    "completeness percent": "gallery.js writes a tile's completeness error on one scale "
                            "(\"< 0.01%\" where it wrote \"5.55e-6%\" beside \"0.99%\"): "
                            "the edits of :data:`_GALLERY_JS`",
    "wall time": "summary.html says how long the command that built it took (the fixture's "
                 "\"This command took 0 s of wall time.\", today's \"The run of <when> took "
                 "<s> s of wall time.\" from summary.json), which depends on when and how it "
                 "ran; the sentence is masked on both sides",
}

_WALL_TIME = re.compile(r"This command took [^ <]+ s of wall time\."
                        r"|The run(?: of [^ <]+)? took [^ <]+ s of wall time\."
                        r"|This command had run for [^ <]+ s of wall time when it built this "
                        r"report \(its total is in summary\.json\)\."
                        r"|The command's wall time is not known yet\.")


#: The strategies page's stylesheet rules: the fixture's, and today's (strategies pairs).
_STRATEGIES_CSS = (
    ".cluster .members { display: flex; flex-wrap: wrap; gap: 3px; }\n"
    ".cluster .members img.sp { width: 64px; height: 64px; object-fit: cover; }\n"
    ".cluster .members.maps img.sp { filter: url(#cmap-default); }\n",
    ".cluster .members { display: flex; flex-wrap: wrap; gap: 6px; }\n"
    ".cluster .members img.sp { width: 64px; height: 64px; object-fit: cover; }\n"
    ".cluster .pair { display: flex; gap: 1px; padding: 2px; border: 1px solid #ddd;\n"
    "                 border-radius: 3px; }\n"
    ".cluster .pair .maps { display: flex; }\n"
    ".cluster .pair .maps img.sp { filter: url(#cmap-default); }\n",
)

_GALLERY_JS = (
    ('r.d[j] === null ? "—" : fmt(100 * r.d[j], 2) + "%");', "pct(r.d[j]));"),
    ("  function className(k)",
     '  // A completeness error as a percentage on one scale: "5.55e-6%" beside "0.99%" reads '
     'as\n'
     "  // the larger of the two.\n"
     "  function pct(v) {\n"
     '    if (v === null || v === undefined) return "—";\n'
     "    var p = 100 * Math.abs(v);\n"
     '    if (p === 0) return "0%";\n'
     '    if (p < 0.01) return "< 0.01%";\n'
     '    return p.toFixed(p < 100 ? 2 : 0) + "%";\n'
     "  }\n"
     "  function className(k)"),
)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def xai(*args: str) -> None:
    """``xai ARGS`` in this process (so that a test can swap the templates), which must
    succeed."""
    result: Any = cli(*args)
    assert result.exit_code == 0, result.output


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced by ``new`` (an exception that no longer finds
    its anchor is a change of the page, and fails here rather than passing unseen)."""
    assert text.count(old) == 1, f"expected {old!r} once in the page, got {text.count(old)}"
    return text.replace(old, new)


def mask_wall_time(text: str) -> str:
    assert len(_WALL_TIME.findall(text)) == 1, "expected one wall-time sentence"
    return _WALL_TIME.sub("(the wall time)", text)


def expected_page(name: str, fixture_text: str, run_dir: Path) -> str:
    """The fixture's page ``name`` as today's code must write it in ``run_dir``: only the
    :data:`PAGE_EXCEPTIONS` applied."""
    text = fixture_text.replace("&#x27;", "&#39;")  # apostrophe
    if name == "summary.html":
        was = read_json(FIXTURE / "runs" / RUN / "store.zarr" / "zarr.json")["attributes"]
        now = read_json(run_dir / "store.zarr" / "zarr.json")["attributes"]
        text = replace_once(text, f"<tr><td>config hash</td><td>{was['config_hash']}</td>",
                            f"<tr><td>config hash</td><td>{now['config_hash']}</td>")
        text = replace_once(text, f"<tr><td>config file</td><td>{was['config']['source']}</td>",
                            f"<tr><td>config file</td><td>{run_dir / 'config.toml'}</td>")
        text = mask_wall_time(text)  # wall time
    return text


def rebuilt_page(name: str, text: str) -> str:
    return mask_wall_time(text) if name == "summary.html" else text


def differences(run_dir: Path) -> list[str]:
    """The files of the report folders that differ from the fixture's (after the
    :data:`PAGE_EXCEPTIONS`), or are in only one of the two, relative to the run folder."""
    was_dir = FIXTURE / "runs" / RUN

    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for folder in REPORT_FOLDERS
                for p in (root / folder).rglob("*") if p.is_file()}

    was, now = files(was_dir), files(run_dir)
    differ = sorted(was ^ now)
    for rel in sorted(was & now):
        old, new = (was_dir / rel).read_bytes(), (run_dir / rel).read_bytes()
        if rel.endswith(".html"):
            name = Path(rel).name
            same = (rebuilt_page(name, new.decode())
                    == expected_page(name, old.decode(), run_dir))
        elif rel == "report/assets/report.css":  # strategies pairs
            same = new.decode() == replace_once(old.decode(), *_STRATEGIES_CSS)
        elif rel == "report/assets/gallery.js":  # completeness percent
            text = old.decode()
            for edit in _GALLERY_JS:
                text = replace_once(text, *edit)
            same = new.decode() == text
        else:
            same = old == new
        if not same:
            differ.append(rel)
    return differ


def first_difference(run_dir: Path, rel: str) -> str:
    """Where page ``rel`` first differs from the fixture's (after the exceptions), for the
    failure message."""
    name = Path(rel).name
    if not rel.endswith(".html") or not (run_dir / rel).is_file():
        return rel
    new = rebuilt_page(name, (run_dir / rel).read_text())
    old = expected_page(name, (FIXTURE / "runs" / RUN / rel).read_text(), run_dir)
    at = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
              min(len(old), len(new)))
    start = max(0, at - 60)
    return f"{rel} at {at}:\n  expected ...{old[start:at + 60]}...\n" \
           f"  got      ...{new[start:at + 60]}..."


def rebuild(root: Path) -> Path:
    """A copy of the fixture's run (and its images) below ``root``, its report cleared and
    rebuilt by today's CLI; returns the run folder."""
    shutil.copytree(FIXTURE / "images", root / "images")
    run_dir = root / "runs" / RUN
    shutil.copytree(FIXTURE / "runs" / RUN, run_dir)
    xai("clean", str(run_dir), "report", "--yes")
    assert not any((run_dir / folder).exists() for folder in REPORT_FOLDERS)
    assert not (run_dir / "state" / "report.jsonl").exists()
    # The run's config.toml names the images where the run was made; --data-dir says where
    # the copy's are (it is the dataset root of the command, not a change of the report).
    xai("report", str(run_dir), "--data-dir", str(root / "images"), *SCHEDULER)
    return run_dir


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rebuild(tmp_path_factory.mktemp("golden"))


def test_the_fixture_holds_a_report_with_pages() -> None:
    """What the comparison relies on: the fixture's report has its three pages, its data
    and its images, and the apostrophe the exception rewrites is really there."""
    report = FIXTURE / "runs" / RUN / "report"
    assert {p.name for p in report.glob("*.html")} == {"index.html", "summary.html",
                                                      "strategies.html"}
    assert list((report / "data").glob("shard-*.js")) and list(report.rglob("*.png"))
    assert "&#x27;" in (report / "summary.html").read_text()


def test_the_rebuilt_report_is_the_one_6338a7c_built(rebuilt: Path) -> None:
    differ = differences(rebuilt)
    assert differ == [], "\n".join(first_difference(rebuilt, rel) for rel in differ)


def test_the_rebuilt_report_records_the_fixture_hash(rebuilt: Path) -> None:
    """The report stage's hash did not change: its completion records name the fixture's
    units, files, checksums and hash (only their times and worker differ)."""
    def records(run_dir: Path) -> list[tuple[Any, ...]]:
        lines = (run_dir / "state" / "report.jsonl").read_text().splitlines()
        return sorted((r["unit"], r["hash"], r["file"], r["checksum"], r["images"])
                      for r in map(json.loads, lines))

    assert records(rebuilt) == records(FIXTURE / "runs" / RUN)


def test_a_changed_template_fails_the_comparison(rebuilt: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison sees the templates: a copy of them with one word changed in each page's
    own template, rendered into a copy of the rebuilt run, makes exactly those pages
    differ."""
    from pipeline.report import templating

    templates = tmp_path / "templates"
    shutil.copytree(templating.TEMPLATES, templates)
    edits = {"summary.html": ("<h2>Stage timings</h2>", "<h2>Stage timing</h2>"),
             "gallery.html": ("Show more</button>", "Show more </button>"),
             "strategies.html": ("Lapuschkin et al. 2019", "Lapuschkin et al., 2019")}
    for name, (old, new) in edits.items():
        source = (templates / name).read_text()
        assert old in source, f"{name} no longer holds {old!r}: pick another edit"
        (templates / name).write_text(source.replace(old, new, 1))

    run_dir = tmp_path / "runs" / RUN
    shutil.copytree(rebuilt, run_dir)
    shutil.copytree(rebuilt.parents[1] / "images", tmp_path / "images")
    # the environment is built once per process, from TEMPLATES as it is then
    monkeypatch.setattr(templating, "TEMPLATES", templates)
    templating.environment.cache_clear()
    try:
        xai("report", str(run_dir), "--data-dir", str(tmp_path / "images"), *SCHEDULER)
    finally:
        monkeypatch.undo()
        templating.environment.cache_clear()  # the next user gets the real templates
    assert differences(run_dir) == ["report/index.html", "report/strategies.html",
                                    "report/summary.html"]
