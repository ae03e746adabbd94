"""``jaxsafety.io``: atomic writes (a failed write leaves the old file and no temp file), JSON of arrays and
configs against ``json`` on plain values, figures against matplotlib's own PNG, CSV errors naming file, row and
column, output-path checks and the cache directory's precedence."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.io import (
    cache_dir,
    check_output_path,
    read_csv_rows,
    save_figure,
    write_atomic,
    write_json_atomic,
)


@dataclasses.dataclass(frozen=True)
class _Cfg:
    lr: float = 0.1
    sizes: tuple[int, ...] = (2, 3)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_json_atomic_encodes_arrays_paths_and_configs(tmp_path):
    data = {
        "np": np.arange(3, dtype=np.int32),
        "jax": jnp.asarray([[0.5, 1.5]]),
        "scalar": np.float64(2.25),
        "path": Path("a") / "b.json",
        "cfg": _Cfg(),
        "plain": [1, "x", None],
    }
    path = write_json_atomic(tmp_path / "sub" / "out.json", data)  # parent folders are created
    assert path == tmp_path / "sub" / "out.json"
    expected = {
        "np": [0, 1, 2],
        "jax": [[0.5, 1.5]],
        "scalar": 2.25,
        "path": os.path.join("a", "b.json"),
        "cfg": {"lr": 0.1, "sizes": [2, 3]},
        "plain": [1, "x", None],
    }
    assert json.loads(path.read_text()) == expected
    assert path.read_text() == json.dumps(expected, indent=2) + "\n"
    assert _listing(path.parent) == ["out.json"]


def test_failed_writes_keep_the_old_file_and_leave_no_temp_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"old": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="not JSON-serialisable: object"):
        write_json_atomic(path, {"new": object()})  # the serialiser fails
    assert path.read_bytes() == before and _listing(tmp_path) == ["results.json"]

    def half_then_fail(tmp: Path) -> None:  # a writer that dies after writing part of the file
        tmp.write_text('{"new": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_bytes() == before and _listing(tmp_path) == ["results.json"]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle: same
        write_atomic(path, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt))
    assert path.read_bytes() == before and _listing(tmp_path) == ["results.json"]


def test_write_atomic_content_kinds_and_file_mode(tmp_path):
    assert write_atomic(tmp_path / "t.txt", "héllo\n").read_bytes() == "héllo\n".encode()
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    write_atomic(tmp_path / "c.csv", lambda tmp: tmp.write_text("a,b\n1,2\n"))
    assert (tmp_path / "c.csv").read_text() == "a,b\n1,2\n"
    # the mode a plain open() gives under this umask, not mkstemp's 0o600
    with (tmp_path / "plain.txt").open("w") as f:
        f.write("x")
    for name in ("t.txt", "b.bin", "c.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == stat.S_IMODE(
            (tmp_path / "plain.txt").stat().st_mode
        )


def test_save_figure_writes_the_same_png_as_savefig_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    def figure():
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1, 2], [1, 0, 1])
        ax.set_title("t")
        return fig

    ref = figure()
    ref.savefig(tmp_path / "ref.png", dpi=80, bbox_inches="tight")
    plt.close(ref)
    fig = figure()
    path = save_figure(fig, tmp_path / "figs" / "ours.png", dpi=80)
    assert not plt.fignum_exists(fig.number)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as ours, Image.open(tmp_path / "ref.png") as want:
        assert ours.size == want.size  # tight bounding box at dpi 80 (a loose one is 240 x 160)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(want))


def test_read_csv_rows_header_rows_and_errors(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(" Model_A ,B\nx, 1\n\n ,\ny,2\n")
    header, rows = read_csv_rows(path)
    assert header == ["model_a", "b"]
    assert rows == [(2, {"model_a": "x", "b": "1"}), (5, {"model_a": "y", "b": "2"})]  # row 1 is the header

    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ConfigError) as err:
        read_csv_rows(path)
    assert str(err.value).startswith("data.csv:row 3='3' is invalid: accepted values are 2 comma-separated")
    for text, accepted in (("", "with a header row"), ("a,b\n", "at least one data row")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=accepted) as err:
            read_csv_rows(path, field="path")
        assert err.value.field == "path"
    with pytest.raises(ConfigError, match="the path of an existing CSV file"):
        read_csv_rows(tmp_path / "missing.csv")


def _passk(path: Path) -> None:
    from jaxsafety.scaling.io import read_passk_csv

    read_passk_csv(path)


def _comparisons(path: Path) -> None:
    from jaxsafety.judges.data import read_comparisons_csv

    read_comparisons_csv(path)


def _redteam(path: Path) -> None:
    from jaxsafety.uplift.survival import read_redteam_csv

    read_redteam_csv(path)


@pytest.mark.parametrize(
    ("reader", "text", "message"),
    [
        (
            _passk,
            "problem_id,attempts,successes\na,10,3\nb,10,11\n",
            "in.csv:row 3:successes='11' is invalid",
        ),
        (_comparisons, "model_a,model_b,winner\nx,y,a\nx,y,c\n", "in.csv:row 3:winner='c' is invalid"),
        (_redteam, "time,found\n1.5,1\n-2,0\n", "in.csv:row 3:time='-2' is invalid"),
    ],
)
def test_csv_readers_name_file_row_and_column(tmp_path, reader, text, message):
    """The CSV readers built on read_csv_rows name the first bad cell as <file>:row N:<column>."""
    path = tmp_path / "in.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        reader(path)
    assert str(err.value).startswith(message)


def test_check_output_path(tmp_path):
    check_output_path("output", tmp_path / "a.JSON", ".json")  # any case
    with pytest.raises(
        ConfigError, match=r"^output='.*a\.txt' is invalid: accepted values are a path ending in"
    ):
        check_output_path("output", tmp_path / "a.txt", ".json")
    (tmp_path / "d.json").mkdir()
    with pytest.raises(ConfigError, match="a file path \\(it is a directory\\)"):
        check_output_path("output", tmp_path / "d.json", ".json")


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JAXSAFETY_CACHE", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "jaxsafety"
    monkeypatch.setenv("JAXSAFETY_CACHE", "")  # empty: as if unset
    assert cache_dir() == tmp_path / "home" / ".cache" / "jaxsafety"
    monkeypatch.setenv("JAXSAFETY_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "root") == tmp_path / "root"  # an explicit root wins
    assert cache_dir(str(tmp_path / "root")) == tmp_path / "root"


def test_compilation_cache_lives_under_the_cache_dir(tmp_path, monkeypatch):
    import jax

    from jaxsafety.xla_flags import enable_compilation_cache

    monkeypatch.setenv("JAXSAFETY_CACHE", str(tmp_path / "env"))
    old = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")}  # fmt: skip
    try:
        assert enable_compilation_cache() == os.fspath(tmp_path / "env" / "xla")
    finally:
        for k, v in old.items():
            jax.config.update(k, v)


def test_run_save_figure_logs_then_saves_and_closes(tmp_path, monkeypatch):
    """Run.save_figure: the figure goes to TensorBoard (read back with its EventAccumulator) and to
    <run dir>/<name>.png through save_figure (then it is closed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from jaxsafety.train.experiment import start_run

    monkeypatch.delenv("JAXSAFETY_TRACKER", raising=False)
    with start_run("io_test", _Cfg(), run_name="r", root=tmp_path) as run:
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        path = run.save_figure(fig, "curve", step=3)
    assert path == run.dir / "curve.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    ea = EventAccumulator(str(run.dir), size_guidance={"images": 0})
    ea.Reload()
    (im,) = ea.Images("figures/curve")
    assert im.step == 3 and im.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
