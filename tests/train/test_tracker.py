"""Tracker round-trip: write with our backend, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from jaxsafety.config import ConfigError
from jaxsafety.train import NoOpTracker, TensorBoardTracker, Tracker, log_history, make_tracker


def _load(logdir: Path) -> EventAccumulator:
    ea = EventAccumulator(
        str(logdir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    )
    ea.Reload()
    return ea


def test_make_tracker_layout_and_backends(tmp_path: Path, monkeypatch):
    trk = make_tracker("my exp", "run/1", root=tmp_path)
    assert isinstance(trk, TensorBoardTracker) and isinstance(trk, Tracker)
    assert trk.logdir == tmp_path / "my_exp" / "run_1"
    trk.close()
    assert isinstance(make_tracker("e", "r", root=tmp_path, backend="none"), NoOpTracker)
    monkeypatch.setenv("JAXSAFETY_TRACKER", "none")
    assert isinstance(make_tracker("e", "r", root=tmp_path), NoOpTracker)
    monkeypatch.delenv("JAXSAFETY_TRACKER")
    with pytest.raises(ConfigError, match="tracker backend='wandb' is invalid: accepted values are one of"):
        make_tracker("e", "r", root=tmp_path, backend="wandb")


def test_roundtrip_scalars_histogram_image_text_hparams(tmp_path: Path):
    values = np.random.default_rng(0).normal(2.0, 0.5, size=1000)
    img = np.zeros((8, 6, 3), np.float32)
    img[:, :3, 0] = 1.0  # left half red
    with make_tracker("exp", "run", root=tmp_path) as trk:
        for step in range(5):
            trk.scalar("loss", jnp.float32(1.0 / (step + 1)), step)
        trk.scalars({"a": 1.5, "nested": {"b": np.float64(2.5)}}, step=7, prefix="m/")
        trk.histogram("weights", jnp.asarray(values), 3)
        trk.image("img", img, 2)
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        trk.figure("fig", fig, 4)
        plt.close(fig)
        trk.text("notes", "hello **world**", 1)
        trk.hparams({"optim": {"lr": 1e-3, "name": "adamw"}, "depth": 3, "clip": None}, {"hparam/acc": 0.9})
    ea = _load(tmp_path / "exp" / "run")
    tags = ea.Tags()
    loss = ea.Scalars("loss")
    assert [e.step for e in loss] == list(range(5))
    np.testing.assert_allclose([e.value for e in loss], [1.0 / (s + 1) for s in range(5)], rtol=1e-6)
    assert [(e.step, e.value) for e in ea.Scalars("m/a")] == [(7, 1.5)]
    assert [(e.step, e.value) for e in ea.Scalars("m/nested/b")] == [(7, 2.5)]
    assert ea.Scalars("hparam/acc")[0].value == pytest.approx(0.9)

    (h,) = ea.Histograms("weights")
    assert h.step == 3
    hv = h.histogram_value
    assert hv.num == 1000
    assert hv.min == pytest.approx(values.min()) and hv.max == pytest.approx(values.max())
    assert hv.sum == pytest.approx(values.sum(), rel=1e-9)
    assert hv.sum_squares == pytest.approx((values**2).sum(), rel=1e-6)  # tensorboardX squares in float32

    assert "img" in tags["images"] and "fig" in tags["images"]
    (im,) = ea.Images("img")
    assert (im.step, im.width, im.height) == (2, 6, 8)
    decoded = plt.imread(__import__("io").BytesIO(im.encoded_image_string), format="png")
    np.testing.assert_allclose(decoded[:, :3, 0], 1.0)
    np.testing.assert_allclose(decoded[:, 3:, :3], 0.0)

    text_tag = next(t for t in tags["tensors"] if t.startswith("notes"))
    (txt,) = ea.Tensors(text_tag)
    assert txt.tensor_proto.string_val[0].decode() == "hello **world**"

    content = ea.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = session.session_start_info.hparams
    assert hp["optim.lr"].number_value == pytest.approx(1e-3)
    assert hp["optim.name"].string_value == "adamw"
    assert hp["depth"].number_value == 3
    assert hp["clip"].string_value == "None"


def test_log_history_with_seed_axis(tmp_path: Path):
    ret = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, np.nan]])  # [seeds, T]
    with make_tracker("exp", "hist", root=tmp_path) as trk:
        log_history(
            trk,
            {"return": ret, "loss": jnp.array([[0.5, 0.4, 0.3], [0.7, 0.6, 0.5]])},
            steps=[10, 20, 30],
            seed_axis=0,
        )
        log_history(trk, {"single": np.array([5.0, 6.0])}, prefix="x/")
    ea = _load(tmp_path / "exp" / "hist")
    assert [(e.step, e.value) for e in ea.Scalars("return")] == [(10, 2.0), (20, 3.0)]  # nan mean skipped
    assert [(e.step, e.value) for e in ea.Scalars("return/min")] == [(10, 1.0), (20, 2.0)]
    assert [(e.step, e.value) for e in ea.Scalars("return/max")] == [(10, 3.0), (20, 4.0)]
    np.testing.assert_allclose([e.value for e in ea.Scalars("loss")], [0.6, 0.5, 0.4], rtol=1e-6)
    assert [(e.step, e.value) for e in ea.Scalars("x/single")] == [(0, 5.0), (1, 6.0)]
    with pytest.raises(ValueError, match="steps has 2 entries but the metrics have 3"):
        log_history(NoOpTracker(), {"a": np.zeros(3)}, steps=[1, 2])


def test_noop_tracker_accepts_everything():
    trk = NoOpTracker()
    assert isinstance(trk, Tracker)
    trk.scalar("a", 1.0, 0)
    trk.scalars({"a": 1.0}, 0)
    trk.histogram("h", np.zeros(3), 0)
    trk.image("i", np.zeros((2, 2)), 0)
    trk.text("t", "x", 0)
    trk.hparams({"a": 1}, {"m": 1.0})
    trk.flush()
    trk.close()
    assert trk.logdir is None
