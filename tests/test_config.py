from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import pytest

from jaxsafety.config import (
    ConfigError,
    check_choice,
    check_range,
    config_from_dict,
    config_to_dict,
    parse_cli,
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
