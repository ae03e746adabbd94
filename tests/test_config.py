from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import pytest

from jaxsafety.config import (
    ConfigError,
    Subcommand,
    check_choice,
    check_range,
    config_from_dict,
    config_to_dict,
    option,
    parse_cli,
    run_subcommands,
)


@dataclasses.dataclass(frozen=True)
class Inner:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    clip: float | None = None

    def __post_init__(self):
        check_choice("name", self.name, ("adamw", "sgd"))
        check_range("lr", self.lr, gt=0)


@dataclasses.dataclass(frozen=True)
class Outer:
    steps: int = 10
    num_seeds: int = 1
    env: str = "CartPole-v1"
    verbose: bool = False
    sizes: tuple[int, ...] = (64, 64)
    inner: Inner = Inner(lr=0.5)

    def __post_init__(self):
        check_range("steps", self.steps, ge=1, integer=True)


def test_check_range_message_names_field_and_accepted_values():
    with pytest.raises(ConfigError, match=r"^lr=-1 is invalid: accepted values are numbers > 0$"):
        check_range("lr", -1, gt=0)
    with pytest.raises(ConfigError, match=r"steps=1.5 is invalid: accepted values are integers >= 1"):
        check_range("steps", 1.5, ge=1, integer=True)
    with pytest.raises(ConfigError, match=r"p=2 is invalid: accepted values are numbers >= 0 and <= 1"):
        check_range("p", 2, ge=0, le=1)
    with pytest.raises(ConfigError, match=r"accepted values are one of 'a', 'b'"):
        check_choice("kind", "c", ("a", "b"))
    check_range("lr", 1e-3, gt=0)  # fine


def test_frozen_configs_are_hashable_and_roundtrip():
    cfg = Outer(sizes=(3, 4), inner=Inner(name="sgd"))
    assert hash(cfg) == hash(Outer(sizes=(3, 4), inner=Inner(name="sgd")))
    d = config_to_dict(cfg)
    assert d == {
        "steps": 10,
        "num_seeds": 1,
        "env": "CartPole-v1",
        "verbose": False,
        "sizes": [3, 4],
        "inner": {"name": "sgd", "lr": 1e-3, "clip": None},
    }
    assert config_from_dict(Outer, json.loads(json.dumps(d))) == cfg


def test_nested_validation_error_carries_the_dotted_path():
    with pytest.raises(ConfigError, match=r"^inner\.lr=-2 is invalid"):
        config_from_dict(Outer, {"inner": {"lr": -2}})
    with pytest.raises(
        ConfigError, match=r"^inner\.bogus=1 is invalid: accepted values are fields inner\.clip"
    ):
        config_from_dict(Outer, {"inner": {"bogus": 1}})


def test_parse_cli_overrides_presets_and_file(tmp_path: Path):
    cfg = parse_cli(
        Outer, ["--steps", "5", "--num-seeds", "8", "--inner.name", "sgd", "--sizes", "1", "2", "3"]
    )
    assert cfg == Outer(steps=5, num_seeds=8, sizes=(1, 2, 3), inner=Inner(name="sgd", lr=0.5))
    # a partial nested override keeps the non-default nested default (lr=0.5)
    assert parse_cli(Outer, ["--inner.clip", "1.5"]).inner == Inner(lr=0.5, clip=1.5)
    assert parse_cli(Outer, ["--inner.clip", "none"]).inner.clip is None
    assert parse_cli(Outer, ["--verbose"]).verbose is True
    assert parse_cli(Outer, ["--verbose", "false"]).verbose is False
    presets = {"smoke": Outer(steps=2, env="Pendulum-v1")}
    assert parse_cli(Outer, ["--smoke"], presets=presets) == Outer(steps=2, env="Pendulum-v1")
    assert parse_cli(Outer, ["--smoke", "--steps", "3"], presets=presets).steps == 3
    f = tmp_path / "over.yaml"
    f.write_text("steps: 7\ninner:\n  lr: 0.25\n")
    cfg = parse_cli(Outer, ["--smoke", "--config", str(f), "--num_seeds", "2"], presets=presets)
    assert (cfg.steps, cfg.env, cfg.num_seeds, cfg.inner.lr) == (7, "Pendulum-v1", 2, 0.25)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--inner.lr", "-1"], "error: inner.lr=-1.0 is invalid: accepted values are numbers > 0"),
        (["--steps", "0"], "error: steps=0 is invalid: accepted values are integers >= 1"),
        (["--steps", "x"], "error: argument --steps: 'x' is invalid: accepted values are an integer"),
        (
            ["--inner.name", "adam"],
            "error: argument --inner.name: 'adam' is invalid: accepted values are one of adamw, sgd",
        ),
        (
            ["--verbose", "maybe"],
            "error: argument --verbose: 'maybe' is invalid: accepted values are true or false",
        ),
    ],
)
def test_parse_cli_bad_value_exits_with_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_cli(Outer, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == expected
    assert err.count("\n") == 1


def test_parse_cli_unknown_flag_and_bad_file(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_cli(Outer, ["--stepz", "3"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --stepz" in capsys.readouterr().err
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"inner": {"lr": 0}}))
    with pytest.raises(SystemExit):
        parse_cli(Outer, ["--config", str(f)])
    assert capsys.readouterr().err.strip() == "error: inner.lr=0 is invalid: accepted values are numbers > 0"


# ----------------------------------------------------------------------------------------------------------------
# run_subcommands: the same flags as parse_cli, one handler for bad input


@dataclasses.dataclass(frozen=True)
class Fit:
    input: Path = option(help="CSV to read")
    steps: int = option(10, help="steps")
    inner: Inner = Inner()
    tag: str | None = None

    def __post_init__(self):
        check_range("steps", self.steps, ge=1, integer=True)


def _commands(calls: list, run_status=None, run_error: Exception | None = None) -> dict[str, Subcommand]:
    def load(cfg: Fit) -> list[str]:
        calls.append(("load", cfg))
        lines = cfg.input.read_text().splitlines()  # OSError for a missing file
        if "bad" in lines:
            raise ConfigError(f"{cfg.input.name}:row {lines.index('bad') + 1}:x", "bad", "good rows")
        if "nan" in lines:
            float("x")  # a ValueError from parsing
        return lines

    def run_fit(cfg: Fit, lines: list[str]) -> int | None:
        calls.append(("run", cfg, lines))
        if run_error is not None:
            raise run_error
        return run_status

    def run_plain(cfg: Outer) -> None:
        calls.append(("plain", cfg))

    return {
        "fit": Subcommand(Fit, run_fit, load=load, help="fit a CSV"),
        "plain": Subcommand(Outer, run_plain, help="no inputs"),
    }


def test_run_subcommands_builds_the_same_config_as_parse_cli(tmp_path: Path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("a\nb\n")
    over = tmp_path / "over.yaml"
    over.write_text("steps: 7\ninner:\n  lr: 0.25\n")
    for argv in (
        ["--input", str(data)],
        ["--input", str(data), "--steps", "3", "--inner.name", "sgd", "--tag", "x"],
        ["--config", str(over), "--input", str(data), "--inner.clip", "2"],
    ):
        calls: list = []
        assert run_subcommands("prog", _commands(calls), ["fit", *argv]) == 0
        assert calls == [("load", parse_cli(Fit, argv)), ("run", parse_cli(Fit, argv), ["a", "b"])]
    calls = []
    argv = ["--steps", "5", "--sizes", "1", "2", "--verbose"]
    assert run_subcommands("prog", _commands(calls), ["plain", *argv]) == 0
    assert calls == [("plain", parse_cli(Outer, argv))]
    assert parse_cli(Fit, ["--input", "x.csv"]).inner == Inner()

    # a path from a --config file is a Path, as from the flag
    (tmp_path / "in.json").write_text(json.dumps({"input": str(data)}))
    calls = []
    assert run_subcommands("prog", _commands(calls), ["fit", "--config", str(tmp_path / "in.json")]) == 0
    assert calls[0] == ("load", Fit(input=data)) and isinstance(calls[0][1].input, Path)

    # --print-config: the config as JSON, exit 0, nothing loaded or run
    calls = []
    assert run_subcommands("prog", _commands(calls), ["fit", "--input", str(data), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == str(data) and calls == []


def test_run_subcommands_exit_status_of_run(tmp_path: Path):
    data = tmp_path / "d.csv"
    data.write_text("a\n")
    assert run_subcommands("prog", _commands([], run_status=1), ["fit", "--input", str(data)]) == 1
    with pytest.raises(RuntimeError, match="a bug"):  # not bad input: the traceback is kept
        run_subcommands("prog", _commands([], run_error=RuntimeError("a bug")), ["fit", "--input", str(data)])


@pytest.mark.parametrize(
    ("argv", "expected", "stage"),
    [
        (["fit", "--input", "{data}", "--steps", "0"], "error: steps=0 is invalid: accepted values are integers >= 1",
         None),
        (["fit", "--input", "{data}", "--steps", "x"],
         "error: argument --steps: 'x' is invalid: accepted values are an integer", None),
        (["fit", "--input", "{data}", "--inner.lr", "-1"],
         "error: inner.lr=-1.0 is invalid: accepted values are numbers > 0", None),
        (["fit", "--steps", "3"], "error: the following arguments are required: --input", None),
        (["fit", "--input", "{data}", "--stepz", "3"], "error: unrecognized arguments: --stepz 3", None),
        (["fitt"], "error: argument COMMAND: invalid choice: 'fitt' (choose from 'fit', 'plain')", None),
        ([], "error: the following arguments are required: COMMAND", None),
        (["fit", "--input", "{bad}"], "error: bad.csv:row 2:x='bad' is invalid: accepted values are good rows",
         "load"),
        (["fit", "--input", "{nan}"], "error: could not convert string to float: 'x'", "load"),
        (["fit", "--input", "{missing}"], "error: [Errno 2] No such file or directory: '{missing}'", "load"),
        (["fit", "--input", "{data}", "--config", "{missing}"],
         "error: [Errno 2] No such file or directory: '{missing}'", None),
        (["fit", "--input", "{data}"], "error: out=1 is invalid: accepted values are 0", "run"),
    ],
)  # fmt: skip
def test_run_subcommands_bad_input_is_one_line_and_status_2(tmp_path: Path, capsys, argv, expected, stage):
    paths = {"data": tmp_path / "d.csv", "bad": tmp_path / "bad.csv", "nan": tmp_path / "nan.csv",
             "missing": tmp_path / "missing.csv"}  # fmt: skip
    paths["data"].write_text("a\n")
    paths["bad"].write_text("a\nbad\n")
    paths["nan"].write_text("nan\n")
    argv = [a.format(**paths) for a in argv]
    calls: list = []
    run_error = ConfigError("out", 1, "0") if stage == "run" else None
    assert run_subcommands("prog", _commands(calls, run_error=run_error), argv) == 2
    err = capsys.readouterr().err
    assert err == expected.format(**paths) + "\n"
    # nothing past the failing stage ran
    assert [c[0] for c in calls] == {None: [], "load": ["load"], "run": ["load", "run"]}[stage]


def test_run_subcommands_help_lists_commands_and_flags(capsys):
    assert run_subcommands("prog", _commands([]), ["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit a CSV" in out and "no inputs" in out
    assert run_subcommands("prog", _commands([]), ["fit", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--input INPUT CSV to read [a path; required]" in out and "--inner.lr" in out
