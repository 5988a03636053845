"""Shared fixtures: tiny tasks and models, and the embedded model (loaded once)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

# tests/kits/ holds user kits that register themselves when imported: the tests load them on purpose (in a
# subprocess, or with the registry restored after), so doctest collection must not import them into a worker.
collect_ignore = ["kits"]

# The suite runs on two xdist workers (make test): one intra-op thread each, so the
# two cores are never oversubscribed (OpenMP spin-waits make that very slow).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

# No progress bars (mechwork.bars) in the suite, in this process or the commands it starts: stderr then holds
# only what a test looks at, however long a command takes. tests/test_bars.py turns them on where it tests them.
os.environ["MECHWORK_QUIET"] = "1"

# Posts cache their results (mechwork.post.cache): never in the user's cache, always in one of this process's own
# (commands it starts inherit it). A test that counts cache hits passes a cache directory of its own.
os.environ["MECHWORK_CACHE"] = tempfile.mkdtemp(prefix="mw-test-cache-")
atexit.register(shutil.rmtree, os.environ["MECHWORK_CACHE"], True)


@pytest.fixture(scope="session")
def modadd_preset():
    from mechwork.models import preset

    return preset("modadd-113")


@pytest.fixture(scope="session")
def embedded_model():
    import mechwork

    return mechwork.load("modadd-113", device="cpu")


@pytest.fixture
def tiny_task():
    from mechwork.tasks import ModularArithmetic

    return ModularArithmetic(p=11, op="add", train_frac=0.5, seed=0)


@pytest.fixture
def tiny_train_cfg():
    from mechwork.training import TrainConfig

    return TrainConfig(steps=30, eval_every=10, ckpt_every=10, ckpt_log=4)


@pytest.fixture(scope="session")
def four_models(tmp_path_factory):
    """name -> what ``mechwork.load`` takes, for the own-model acceptance models (tests/fourmodels.py)."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    import fourmodels

    root = tmp_path_factory.mktemp("fourmodels")
    return {name: fourmodels.build(name, root) for name in fourmodels.NAMES}
