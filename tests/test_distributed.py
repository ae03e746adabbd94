"""jaxsafety.distributed and the per-process batch helpers in a single process (the multi-process behaviour is
tested for real in tests/train/test_multihost.py): round trips, typed keys, and the rows a process feeds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxsafety import distributed
from jaxsafety.train.sharding import make_mesh, process_batch, process_rows, shard_batch


def test_single_process_helpers_are_identities():
    assert distributed.initialize() == 0  # no launcher variables: nothing to join
    assert not distributed.is_initialized()
    assert distributed.is_main() and distributed.process_count() == 1
    assert distributed.broadcast_from_main("run-20261205") == "run-20261205"
    distributed.sync("noop")  # returns at once


def test_to_host_put_global_round_trip_keeps_values_and_keys():
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "k": jax.random.key(3), "n": np.ones(2), "s": 1.5}
    host = distributed.to_host(tree)
    assert isinstance(host["w"], np.ndarray) and host["s"] == 1.5
    np.testing.assert_array_equal(host["w"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(jax.random.key_data(host["k"]), jax.random.key_data(tree["k"]))
    mesh = make_mesh(1)
    rep = NamedSharding(mesh, PartitionSpec())
    placed = distributed.put_global({"w": host["w"], "k": host["k"]}, {"w": rep, "k": rep})
    assert placed["w"].sharding == rep
    np.testing.assert_array_equal(
        jax.random.uniform(placed["k"], (3,)), jax.random.uniform(tree["k"], (3,))
    )  # the same key
    local = distributed.to_local(tree["w"])
    assert local.devices() == {jax.local_devices()[0]}


def test_a_single_process_feeds_every_row():
    mesh = make_mesh(1)
    assert process_rows(8, mesh) == slice(0, 8)
    x = np.arange(16).reshape(8, 2)
    np.testing.assert_array_equal(np.asarray(process_batch({"x": x}, mesh)["x"]), x)
    np.testing.assert_array_equal(np.asarray(shard_batch({"x": x}, mesh)["x"]), x)


def test_bad_launcher_variables_are_named(monkeypatch):
    monkeypatch.setenv(distributed.COORDINATOR_ENV, "127.0.0.1:1")
    monkeypatch.setenv(distributed.NUM_PROCESSES_ENV, "2")
    monkeypatch.setenv(distributed.PROCESS_ID_ENV, "x")
    with pytest.raises(ValueError, match="JAXSAFETY_NUM_PROCESSES and JAXSAFETY_PROCESS_ID must be integers"):
        distributed.initialize()
    monkeypatch.setenv(distributed.PROCESS_ID_ENV, "2")
    with pytest.raises(ValueError, match=r"JAXSAFETY_PROCESS_ID=2 is invalid: accepted values are 0 \.\. 1"):
        distributed.initialize()
