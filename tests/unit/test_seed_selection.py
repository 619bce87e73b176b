"""The DEMO model's seed selection (streams/demo.py): the seeds' sft logs are read at the selection step."""

from __future__ import annotations

from streams.demo import DEMO_MODEL_RECIPE, SFT_LOG_EVERY, choose_seed, loss_at

LOG = """sft: base tiny-qwen2.5-vl-random-init(seed=0) (6.0 s), 480 records, 4500 steps, lr 0.003, event aux weight 3
vision warm-up 1000/3000  event loss 0.3223  0.019 s/step
step 750/4500  loss 1.1823  lr 2.70e-03  0.054 s/step
step 1000/4500  loss 0.8961  lr 2.42e-03  0.054 s/step
step 10000/20000  loss 0.0100  lr 1.00e-04  0.054 s/step
"""


def test_the_loss_at_a_step_is_read_from_its_line_and_only_once_logged() -> None:
    assert loss_at(LOG, 1000) == 0.8961
    assert loss_at(LOG, 750) == 1.1823
    assert loss_at(LOG, 1250) is None  # not yet logged
    assert loss_at(LOG, 3000) is None  # a warm-up line is not a fine-tuning step
    assert loss_at("", 1000) is None


def test_the_seed_with_the_lower_loss_is_kept_the_lower_seed_on_a_tie() -> None:
    assert choose_seed({0: 0.65, 1: 1.02}) == 0
    assert choose_seed({0: 0.90, 1: 0.60}) == 1
    assert choose_seed({1: 0.5, 0: 0.5}) == 0


def test_the_selection_step_is_a_logged_fine_tuning_step() -> None:
    """The cut must fall on a line the seeds' sft processes log, and before their end."""
    step = int(DEMO_MODEL_RECIPE["selection_step"])
    assert step % SFT_LOG_EVERY == 0 and 0 < step < int(DEMO_MODEL_RECIPE["steps"])
