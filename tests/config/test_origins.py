from pathlib import Path

from workflows.config.origins import Origins, did_you_mean, line_of

TEXT = """\
# a comment
[dataset]
root = "x"

[methods.gradient]
abs = true
[run]   # trailing comment
  seed=3
"""


def test_line_of_finds_headers_and_keys_in_their_table():
    assert line_of(TEXT, ("dataset",)) == 2
    assert line_of(TEXT, ("dataset", "root")) == 3
    assert line_of(TEXT, ("methods", "gradient")) == 5
    assert line_of(TEXT, ("methods", "gradient", "abs")) == 6
    assert line_of(TEXT, ("run",)) == 7
    assert line_of(TEXT, ("run", "seed")) == 8
    assert line_of(TEXT, ("run", "root")) is None  # root is written, but in [dataset]


def test_origins_name_the_last_override_else_the_file_line():
    written = {"dataset": {"root": "x"}, "methods": {"gradient": {"abs": True}},
               "run": {"seed": 3}}
    where = Origins(Path("c.toml"), TEXT, written,
                    ["run.seed=1", "run.seed=2", "methods.gradient.abs=false",
                     "render.colormap=x"])
    assert where("run", "seed") == "--set run.seed=2"
    assert where("dataset", "root") == "c.toml, line 3"
    # an override inside a table the file has did not make the table
    assert where("methods", "gradient") == "c.toml, line 5"
    # ... but it made one the file does not have
    assert where("render") == "--set render.colormap=x"
    assert where("report", "enabled") == "c.toml"


def test_did_you_mean_offers_the_closest_name_only_when_close():
    assert did_you_mean("sed", ["seed", "out"], "run.") == "; did you mean `run.seed`?"
    assert did_you_mean("zzz", ["seed", "out"]) == ""
