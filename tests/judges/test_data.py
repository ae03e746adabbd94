"""Comparisons data model and CSV I/O: round trip, winner labels, and malformed files (errors name file:row:col)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.judges.data import (
    Comparisons,
    concat_comparisons,
    make_comparisons,
    read_comparisons_csv,
    to_csv,
)


def _write(tmp_path, text: str, name: str = "judge.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_round_trip_keeps_every_record(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=50)
    b = (a + rng.integers(1, 4, size=50)) % 4
    comps = make_comparisons(
        a,
        b,
        rng.integers(0, 3, size=50),
        rng.uniform(size=50),
        rng.integers(0, 2, size=50),
        model_names=["gpt", "llama", "mistral", "qwen"],
        instruction_names=["q1", "q2", "q3"],
    )
    path = tmp_path / "out.csv"
    to_csv(comps, path)
    back = read_comparisons_csv(path)
    assert back.num_comparisons == 50
    # Indices are re-assigned in first-seen order: compare through the names.
    for field, names, names_back in (
        ("model_a", comps.model_names, back.model_names),
        ("model_b", comps.model_names, back.model_names),
        ("instruction", comps.instruction_names, back.instruction_names),
    ):
        assert [names[i] for i in getattr(comps, field)] == [names_back[i] for i in getattr(back, field)]
    np.testing.assert_array_equal(back.prob_a, comps.prob_a)  # repr() keeps full precision
    np.testing.assert_array_equal(back.position, comps.position)


def test_winner_labels_and_optional_columns(tmp_path):
    path = _write(tmp_path, "model_a,model_b,winner\nx,y,a\ny,z,B\nz,x,Tie\n")
    comps = read_comparisons_csv(path)
    assert comps.model_names == ("x", "y", "z")
    assert comps.instruction_names == ("default",)
    np.testing.assert_array_equal(comps.prob_a, [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(comps.model_a, [0, 1, 2])
    np.testing.assert_array_equal(comps.model_b, [1, 2, 0])
    np.testing.assert_array_equal(comps.position, [0, 0, 0])
    np.testing.assert_array_equal(comps.instruction, [0, 0, 0])


def test_prob_a_column_with_instruction_and_position(tmp_path):
    path = _write(tmp_path, "instruction,model_a,model_b,prob_a,position\nq1,x,y,0.25,1\n\nq2,y,x,1,0\n")
    comps = read_comparisons_csv(path)
    assert comps.instruction_names == ("q1", "q2")
    np.testing.assert_array_equal(comps.prob_a, [0.25, 1.0])
    np.testing.assert_array_equal(comps.position, [1, 0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model_a,model_b,winner\nx,y,a\nx,y,c\n",
            "judge.csv:row 3:winner='c' is invalid: accepted values are a, b or tie",
        ),
        (
            "model_a,model_b,winner\nx,x,a\n",
            "judge.csv:row 2:model_b='x' is invalid: accepted values are a model different from model_a='x'",
        ),
        (
            "model_a,model_b,prob_a\nx,y,nan\n",
            "judge.csv:row 2:prob_a='nan' is invalid: accepted values are numbers in [0, 1]",
        ),
        ("model_a,model_b,prob_a\nx,y,1.5\n", "judge.csv:row 2:prob_a='1.5'"),
        ("model_a,model_b,prob_a\nx,y,\n", "judge.csv:row 2:prob_a=''"),
        ("model_a,model_b,prob_a\nx,y,inf\n", "judge.csv:row 2:prob_a='inf'"),
        ("model_a,model_b,prob_a,position\nx,y,0.5,2\n", "judge.csv:row 2:position='2'"),
        ("model_a,model_b,prob_a\n,y,0.5\n", "judge.csv:row 2:model_a=''"),
        ("model_a,model_b,prob_a\nx,y\n", "judge.csv:row 2="),
        ("model_a,winner\nx,a\n", "judge.csv:columns="),
        ("model_a,model_b\nx,y\n", "judge.csv:columns="),
        ("model_a,model_b,winner\n", "a CSV file with at least one data row"),
        ("", "a CSV file with a header row"),
    ],
)
def test_malformed_csv_names_file_row_and_column(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        read_comparisons_csv(path)
    assert message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="the path of an existing CSV file"):
        read_comparisons_csv(tmp_path / "nope.csv")


def test_make_comparisons_validates():
    with pytest.raises(
        ConfigError, match=r"model_b\[1\]=2 is invalid: accepted values are a model different"
    ):
        make_comparisons([0, 2], [1, 2], [0, 0], [0.5, 0.5])
    with pytest.raises(ConfigError, match=r"prob_a\[0\]=nan"):
        make_comparisons([0], [1], [0], [np.nan])
    with pytest.raises(
        ConfigError, match=r"model_a\[0\]=3 is invalid: accepted values are integers in \[0, 2\]"
    ):
        make_comparisons([3], [1], [0], [0.5], num_models=3)
    with pytest.raises(ConfigError, match=r"position\[0\]=2"):
        make_comparisons([0], [1], [0], [0.5], [2])
    with pytest.raises(ConfigError, match="as many entries as model_a"):
        make_comparisons([0, 1], [1], [0, 0], [0.5, 0.5])
    comps = make_comparisons([0, 1], [1, 2], [0, 1], [0.5, 1.0])
    assert comps.model_names == ("model_0", "model_1", "model_2")
    assert comps.instruction_names == ("instr_0", "instr_1")
    assert comps.num_models == 3 and comps.num_instructions == 2 and comps.num_comparisons == 2


def test_concat_requires_shared_names():
    one = make_comparisons([0], [1], [0], [0.5], num_models=2)
    both = concat_comparisons([one, one])
    assert isinstance(both, Comparisons) and both.num_comparisons == 2
    other = make_comparisons([0], [1], [0], [0.5], model_names=["p", "q"])
    with pytest.raises(ConfigError, match="sharing model and instruction names"):
        concat_comparisons([one, other])
