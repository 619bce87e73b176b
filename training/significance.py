"""How sure a held-out comparison is: a paired bootstrap over the clips.

A retraining run judges its candidate on a few dozen clips of held-out vehicles, where one clip more or less right
moves the micro F1 by a few hundredths: docs/demo-model.md shows a candidate promoted at 0.973 -> 0.986 on 30 clips
that scored 0.979 -> 0.970 on 100 others. Resampling the clips with replacement, and scoring both models on the
same resample, gives the share of resamples in which the candidate beats production: with one clip better and none
worse that share is about 64 %, with three about 95 %. The retraining gate promotes only above `--min-confidence`.

Written by hand, in numpy: scipy's `bootstrap` gives confidence intervals of one statistic, not this win rate of
one micro average over another on paired clips, and the whole computation is a few vectorised lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import numpy as np

ClipCounts = tuple[int, int, int]  # one clip's event types: true positives, false positives, false negatives
RESAMPLES = 2000


def clip_counts(predicted: AbstractSet[object], truth: AbstractSet[object]) -> ClipCounts:
    """One clip's contribution to the micro counts (`schemas.scoring` counts the same way, summed over types)."""
    return len(predicted & truth), len(predicted - truth), len(truth - predicted)


def micro_f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 of summed (tp, fp, fn) along the last axis; 0 where nothing was predicted or expected."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def win_rate(
    production: Sequence[ClipCounts],
    candidate: Sequence[ClipCounts],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> float:
    """The share of paired resamples of the clips in which the candidate's micro F1 is strictly above production's
    (ties count as no win: a candidate that changes nothing is never promoted)."""
    if len(production) != len(candidate) or not production:
        raise ValueError("both models must be scored on the same non-empty list of clips")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    base, cand = np.asarray(production, dtype=np.int64), np.asarray(candidate, dtype=np.int64)
    picks = np.random.default_rng(seed).integers(0, len(base), size=(resamples, len(base)))
    wins = micro_f1(cand[picks].sum(axis=1)) > micro_f1(base[picks].sum(axis=1))
    return float(wins.mean())
