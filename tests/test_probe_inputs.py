"""Bad input found by probing the Python API and the command line with whole classes of values."""

from __future__ import annotations

import pytest

from mechwork.errors import ConfigError
from mechwork.limits import SEED_MAX


@pytest.mark.parametrize("seed", [SEED_MAX + 1, 2**63, 10**23, -1])
def test_seeds_outside_the_generator_range_are_one_line_everywhere(seed):
    """A seed past 64 bits used to reach torch's generator as a raw ``Overflow when unpacking long long``."""
    from mechwork.models import ToyConfig
    from mechwork.probes import standard_probe
    from mechwork.tasks import InductionTask, ModularArithmetic
    from mechwork.training import TrainConfig

    makers = [
        lambda: ModularArithmetic(p=11, seed=seed),
        lambda: InductionTask(d_vocab=8, seq_len=8, min_len=2, max_len=4, seed=seed),
        lambda: ToyConfig(seed=seed),
        lambda: TrainConfig(seed=seed),
        lambda: standard_probe(ModularArithmetic(p=11), n=2, seed=seed),
    ]
    for make in makers:
        with pytest.raises(ConfigError) as e:
            make()
        assert "'seed' must be an integer" in str(e.value) and "\n" not in str(e.value)


def test_the_largest_seed_still_trains_and_probes():
    """The bound is not too tight: SEED_MAX reaches torch's generators (init, minibatch, probe) without error."""
    from mechwork.models import ToyConfig, build_model
    from mechwork.probes import standard_probe
    from mechwork.tasks import ModularArithmetic
    from mechwork.training import TrainConfig, train

    task = ModularArithmetic(p=5, train_frac=0.5, seed=SEED_MAX)
    cfg = ToyConfig.for_task(task, seed=SEED_MAX)
    build_model(cfg)
    tc = TrainConfig(steps=2, seed=SEED_MAX, batch_size=4, eval_every=1)
    train(task, cfg, tc, quiet=True)
    assert standard_probe(task, n=2, seed=SEED_MAX).clean.shape == (2, 3)
