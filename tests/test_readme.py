"""The README and the hand-written docs say what the code does: their examples run as written,
the commands, options, make targets, modules and tests they name exist, their links land,
and the README stays a newcomer's page."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.workflow_helpers import cli, make_images, write_config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: The pages written by hand (configuration.md and store-format.md are generated, and have
#: tests of their own).
HAND_WRITTEN = ("methods.md", "scale.md", "performance.md", "design.md", "extending.md",
                "huggingface.md", "compare.md")
PAGES = (README, *(DOCS / name for name in HAND_WRITTEN))
#: The README is the newcomer's path; the rest goes into docs/ by topic.
README_MAX_LINES = 400


def _replace(code: str, old: str, new: str) -> str:
    """``code.replace(old, new)``, failing loudly when the README no longer contains ``old``."""
    assert old in code, f"the README example no longer contains {old!r}: update this test"
    return code.replace(old, new)


def _section(heading: str) -> str:
    """The README from ``heading`` to the next heading of the same level."""
    text = README.read_text()
    assert heading in text, f"the README has no heading {heading!r}: update this test"
    section = text[text.index(heading):]
    level = heading.split(" ")[0]
    end = section.find(f"\n{level} ", len(heading))
    return section if end < 0 else section[:end]


def _block(heading: str) -> str:
    match = re.search(r"```python\n(.*?)```", _section(heading), re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


# ------------------------------------------------------------------ the examples run


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("readme")
    result = cli("run", "--dataset", "sample", "--out", str(out), "--weights", "random",
                 "--device", "cpu", "--scheduler", "synchronous",
                 "--set", "methods.integrated_gradients.n_steps=4",
                 "--set", "methods.custom_integrated_gradients.n_steps=4",
                 "--set", "methods.smoothgrad.nt_samples=2")
    assert result.exit_code == 0, result.output
    return out / "sample" / "store.zarr"


def test_analysis_example_runs(sample_store, capsys):
    code = _replace(_block("## Analysing the store"), "runs/sample/store.zarr",
                    str(sample_store))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "custom_integrated_gradients" in printed
    assert "random:seed=0" in printed
    # The example's plain-string conversion: `.tolist()` (`.astype(str)` raises on StringDType).
    assert "explainers: ['gradient', 'integrated_gradients'" in printed


def test_library_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    code = _replace(_block("## Library use"), 'load_model("imagenet")', 'load_model("random")')
    code = _replace(code, "get_custom_integrated_gradients(model, x, 50)",
                    "get_custom_integrated_gradients(model, x, 4)")
    code = _replace(code, "get_integrated_gradients(model, x)",
                    "get_integrated_gradients(model, x, n_steps=4)")
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert tuple(scope["heat"].shape) == (224, 224)


def test_export_example_runs_and_loads(tmp_path, monkeypatch):
    """The export lines give a program the pipeline loads (dynamic batch included)."""
    import torch

    from pipeline.models.classifier import load_model

    monkeypatch.chdir(tmp_path)
    exec(compile(_block("## Your own model"), "README.md", "exec"), {})
    loaded = load_model(tmp_path / "model.pt2", "logits")
    assert loaded.arch == "exported" and len(loaded.classes) == 10
    with torch.no_grad():
        assert loaded.backbone(torch.zeros(3, 3, 224, 224)).shape == (3, 10)


def test_every_root_attribute_of_the_store_is_described_where_the_readme_points(sample_store):
    """The README's store section links to the store format's root attributes, which
    describe every attribute a real run's store has."""
    import zarr

    attrs = set(zarr.open_group(str(sample_store), mode="r").attrs)
    section = _section("## Analysing the store")
    assert "(docs/store-format.md)" in section, "the store section does not link the format"
    page = (ROOT / "docs" / "store-format.md").read_text()
    table = page[page.index("## Root attributes"):]
    missing = sorted(a for a in attrs if f"| `{a}` |" not in table)
    assert not missing, f"root attributes docs/store-format.md does not describe: {missing}"


# ------------------------------------------------------------------ the README's shape


def test_the_readme_is_a_newcomers_page():
    text = README.read_text()
    lines = text.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, expected at most " \
        f"{README_MAX_LINES}: move the detail into docs/"
    headings = re.findall(r"^## (.+)$", text, re.M)
    for topic in ("Two commands", "Your own images", "Your own model", "Which method to trust",
                  "Analysing the store", "Where to read on"):
        assert topic in headings, f"the README lost its section {topic!r}: {headings}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_tells_how_the_project_was_built(page):
    """No issue numbers, no dated history: pages describe the code as it is."""
    text = page.read_text()
    found = re.findall(r"\bissues? #?\d+|(?<![\w/])#\d+\b|\b20\d\d-\d\d-\d\d\b", text, re.I)
    assert not found, f"{page.name} mentions {found}"


# ------------------------------------------------------------------ links land


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]


def test_slug_follows_github():
    assert _slug("Integrated Gradients to a tolerance: `rule = \"adaptive\"`") == \
        "integrated-gradients-to-a-tolerance-rule--adaptive"
    assert _slug("Store layouts and 16-bit maps") == "store-layouts-and-16-bit-maps"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_lands(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: {broken}"


def test_the_readme_links_every_page_of_the_docs():
    linked = {Path(t.partition("#")[0]).name for t in _links(README)}
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages <= linked, f"docs pages the README does not lead to: {sorted(pages - linked)}"


# ------------------------------------------------------------------ commands are real


def _bash_lines(page: Path) -> list[str]:
    """The lines of a page's bash blocks, comments dropped."""
    return [ln.split("  #")[0].strip()
            for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S)
            for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _inline_code(page: Path) -> list[str]:
    """A page's inline code spans outside its code blocks, whitespace collapsed (a span may
    wrap a line)."""
    rest = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [" ".join(m.split()) for m in re.findall(r"`([^`]+)`", rest)]


def _code_spans(page: Path) -> list[str]:
    """Every command-like text of a page: its bash lines and its inline code."""
    return _bash_lines(page) + _inline_code(page)


#: ``make`` targets that are ``xai`` commands (the Makefile's recipes).
MAKE_TO_XAI = {"run": ["run"], "status": ["status"], "clean": ["clean"], "bench": ["bench"],
               "xai": []}


def _xai_argv(command: str) -> list[str] | None:
    """The ``xai`` arguments a README command runs (``xai ...``, or ``make T ... ARGS=...``),
    or None when it runs no ``xai`` command."""
    try:
        words = shlex.split(command.replace("…", ""))
    except ValueError:
        return None
    if words[:1] == ["xai"]:
        return words[1:]
    if words[:1] == ["make"] and len(words) > 1 and words[1] in MAKE_TO_XAI:
        args = [w.split("=", 1)[1] for w in words[2:] if w.startswith("ARGS=")]
        return MAKE_TO_XAI[words[1]] + (shlex.split(args[0]) if args else [])
    return None


def _xai_group():
    """The installed ``xai`` script's click group (its module, from pyproject.toml)."""
    import typer

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["xai"]
    module = importlib.import_module(target.split(":")[0])
    return typer.main.get_command(module.app)


def _unknown_options(group, argv: list[str]) -> list[str]:
    """The subcommand or options of ``argv`` that ``xai`` does not have."""
    command, words = group, list(argv)
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        name = words.pop(0)
        if name not in command.commands:
            return [f"xai command {name!r}"]
        command = command.commands[name]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    return [f"{w.split('=')[0]} of {command.name}" for w in words
            if re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?", w) and w.split("=")[0] not in known]


def test_unknown_options_are_caught():
    """The check below can fail: a made-up option and command are reported."""
    group = _xai_group()
    assert _unknown_options(group, ["run", "--dataset", "x"]) == []
    assert _unknown_options(group, ["run", "--no-such-option"]) == ["--no-such-option of run"]
    assert _unknown_options(group, ["frobnicate"]) == ["xai command 'frobnicate'"]
    assert _unknown_options(group, ["weights", "import", "--arch", "resnet50", "f"]) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_xai_command_and_option_named_exists(page):
    group = _xai_group()
    problems = []
    for command in _code_spans(page):
        argv = _xai_argv(command)
        if argv is not None:
            problems += [f"`{command}`: {p}" for p in _unknown_options(group, argv)]
    assert not problems, f"{page.name}: {problems}"


def test_the_readme_command_table_names_real_options():
    """Each row of the README's command table: the options its description names exist."""
    group = _xai_group()
    problems = []
    for row in re.findall(r"^\| `(xai [^`]+)` \|(.*)\|$", _section("## Commands"), re.M):
        argv = [w for w in shlex.split(row[0].replace("…", "")) if not w.startswith("[")]
        path = [w for w in argv[1:] if w.isidentifier() and not w.isupper()]
        options = re.findall(r"`(--[a-z][\w-]*)", row[1])
        problems += _unknown_options(group, path + options)
    assert problems == []


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_named_exists(page):
    targets = _make_targets()
    named = {c.split()[1] for c in _code_spans(page)
             if c.startswith("make ") and len(c.split()) > 1 and "=" not in c.split()[1]}
    assert named <= targets, f"{page.name} names make targets {sorted(named - targets)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_module_and_script_named_exists(page):
    missing = []
    for command in _code_spans(page):
        for module in re.findall(r"python -m ([\w.]+)", command):
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        for script in re.findall(r"(?<![\w/])((?:benchmarks|tests|pipeline|workflows)/[\w/]+"
                                 r"\.py)", command):
            if not (ROOT / script).is_file():
                missing.append(script)
    assert not missing, f"{page.name} names {missing}"


def test_every_test_the_guarantees_name_exists():
    text = (DOCS / "scale.md").read_text()
    table = text[text.index("| situation | promise | proved by |"):]
    names = set(re.findall(r"`(test_\w+)(…?)`", table))
    assert len(names) > 10
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    missing = sorted(name for name, partial in names
                     if f"def {name}{'' if partial else '('}" not in sources)
    assert not missing, f"docs/scale.md's guarantees name tests that do not exist: {missing}"


def test_the_guarantees_count_every_crash_point_of_the_registry():
    from workflows.stages import REGISTRY

    points = sum(len(stage.crash_points) for stage in REGISTRY)
    text = (DOCS / "scale.md").read_text()
    assert f"every crash point the stage registry declares, {points} in all" in text


# ------------------------------------------------------------------ shell commands without uv

#: How a README command line may start: every one of these works without ``uv`` on the PATH.
COMMAND_STARTS = ("make ", "xai ", "dask ", "source .venv/bin/activate", "CUDA_VISIBLE_DEVICES=")


def _readme_shell_commands() -> list[str]:
    """Every command the README shows: the lines of its bash blocks, and inline code that
    starts like a command."""
    inline = [c for c in _inline_code(README)
              if c.startswith(("make ", "uv ", "xai ", "dask ", "python ", "pip "))]
    return _bash_lines(README) + inline


def test_readme_commands_need_no_uv_on_the_path():
    commands = _readme_shell_commands()
    assert any(c.startswith("make xai") for c in commands)
    bad = [c for c in commands if not c.startswith(COMMAND_STARTS)]
    assert not bad, f"README commands that need uv (or another tool) on the PATH: {bad}"


def _path_without_uv() -> str:
    """$PATH less ``~/.local/bin`` and every folder that holds a ``uv`` executable."""
    keep = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        p = Path(folder).expanduser()
        if p == Path.home() / ".local" / "bin" or (p / "uv").exists():
            continue
        keep.append(folder)
    return os.pathsep.join(keep)


def test_readme_make_commands_work_without_uv_on_the_path(tmp_path):
    """`make help`, `make xai`, `make run/status/clean DATASET=…` as the README writes them,
    from a shell whose PATH lacks ~/.local/bin (where pip puts uv)."""
    root = tmp_path / "images"
    make_images(root, n=2, broken=False)
    confs = tmp_path / "configs"
    write_config(confs / "tiny.toml", root, tmp_path / "runs", methods=("gradient",))
    env = {**os.environ, "PATH": _path_without_uv(), "XAI_CONFIG_DIR": str(confs),
           "MPLBACKEND": "Agg"}
    assert shutil.which("uv", path=env["PATH"]) is None

    def make(*args: str) -> str:
        done = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"make {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    assert "make xai ARGS=" in make("help")
    assert "Usage: xai" in make("xai", "ARGS=--help")
    assert "images: 2 (2 explained" in make("run", "DATASET=tiny", "ARGS=--scheduler synchronous")
    assert "done" in make("status", "DATASET=tiny")
    assert "cache:" in make("xai", "ARGS=weights status")
    make("clean", "DATASET=tiny", "ARGS=--yes")
    assert not (tmp_path / "runs" / "tiny" / "store.zarr").exists()
