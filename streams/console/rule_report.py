"""Model vs telemetry rules (issue 19, item 3): where the model's events and the telemetry rules' (`rule_events`,
migration 0023, schemas/motion_rules.py) agree and where they do not, for a fleet's clips of a window of days.

Each event of a type the rules report (RULE_TYPES: harsh braking, acceleration, turn, speeding) on a clip that
started in the window gets an outcome:
- `both`: a rule event and one of the answer's events of the same type whose times overlap, or miss by at most
  MATCH_TOLERANCE_S (each side of such a pair is `both`);
- `rules_only`: a rule event the answer has nothing of that type near;
- `model_only`: an answer's event the rules have nothing near, on a clip whose telemetry could show that type;
- `unjudged`: an answer's event on a clip whose telemetry could not show its type (no telemetry, no yaw rate for a
  turn, no known limit for speeding): the rules' silence there is no disagreement.
The answer is the clip's current one (report_events' and the review queue's), so a manager's correction counts as
its events. Per type, the report counts the clips with each outcome and lists the events, each with its clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from schemas.messages import TelemetrySample
from schemas.motion_rules import MATCH_TOLERANCE_S, RULE_TYPES, judged, matched
from schemas.taxonomy import EventType

Outcome = Literal["both", "rules_only", "model_only", "unjudged"]
OUTCOMES: tuple[Outcome, ...] = ("both", "rules_only", "model_only", "unjudged")
ROW_COLUMNS = (
    "clip_id",
    "occurred_at",
    "vehicle_id",
    "driver_id",
    "type",
    "source",
    "outcome",
    "start_s",
    "end_s",
    "peak",
    "thresholds",
)
_SAMPLES = TypeAdapter(list[TelemetrySample])


@dataclass(frozen=True)
class _Event:
    """One side's event on a clip (the shape `matched` reads)."""

    type: EventType
    start: float
    end: float
    row: dict[str, Any]


@dataclass(frozen=True)
class RuleComparison:
    since: date
    until: date  # exclusive
    clips: int  # clips that started in the window
    with_telemetry: int  # of which carry telemetry
    types: list[dict[str, Any]]  # per rule type: clips with each outcome
    rows: list[dict[str, Any]]  # every compared event (ROW_COLUMNS), newest clip first

    @property
    def disagreements(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["outcome"] in ("rules_only", "model_only")]


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


CLIPS = "c.fleet_id = :fleet AND c.start_ts >= :a AND c.start_ts < :b"
SELECTED = "c.clip_id, c.vehicle_id, c.driver_id, to_timestamp(c.start_ts) AS occurred_at"


def compare_rules(
    conn: Connection, fleet_id: str, since: date, until: date, *, tolerance_s: float = MATCH_TOLERANCE_S
) -> RuleComparison:
    """The fleet's clips that started in [since, until) (UTC days), their rule events against their answers'."""
    window = {"fleet": fleet_id, "a": _epoch(since), "b": _epoch(until)}
    counts = conn.execute(
        text(f"""SELECT count(*) AS clips,
                        count(*) FILTER (WHERE jsonb_array_length(coalesce(c.telemetry, '[]'::jsonb)) > 0) AS tel
                 FROM clips c WHERE {CLIPS}"""),
        window,
    ).one()
    rules = (
        conn.execute(
            text(f"""SELECT {SELECTED}, r.type, r.start_s, r.end_s, r.peak, r.thresholds
                 FROM clips c JOIN rule_events r ON r.clip_id = c.clip_id AND r.fleet_id = c.fleet_id
                 WHERE {CLIPS}"""),
            window,
        )
        .mappings()
        .all()
    )
    model = (
        conn.execute(
            text(f"""SELECT {SELECTED}, e.type, e.start_s, e.end_s
                 FROM clips c JOIN answer_facts a ON a.clip_id = c.clip_id
                 JOIN events e ON e.fleet_id = c.fleet_id AND e.inference_id = a.inference_id
                 WHERE {CLIPS} AND e.type IN :types""").bindparams(bindparam("types", expanding=True)),
            {**window, "types": [t.value for t in RULE_TYPES]},
        )
        .mappings()
        .all()
    )
    by_clip: dict[str, tuple[list[_Event], list[_Event]]] = {}
    for source, rows in (("rules", rules), ("model", model)):
        for r in rows:
            row = {"peak": None, "thresholds": None, **dict(r), "source": source}
            event = _Event(EventType(r["type"]), r["start_s"], r["end_s"], row)
            by_clip.setdefault(r["clip_id"], ([], []))[source == "model"].append(event)
    seen = _judged(conn, [clip for clip, (_, answered) in by_clip.items() if answered])
    out: list[dict[str, Any]] = []
    for clip_id, (found, answered) in by_clip.items():
        for event, agreed in zip(found, matched(found, answered, tolerance_s=tolerance_s), strict=True):
            out.append({**event.row, "outcome": "both" if agreed else "rules_only"})
        for event, agreed in zip(answered, matched(answered, found, tolerance_s=tolerance_s), strict=True):
            outcome = "both" if agreed else "model_only" if event.type in seen[clip_id] else "unjudged"
            out.append({**event.row, "outcome": outcome})
    out.sort(
        key=lambda r: (-r["occurred_at"].timestamp(), r["clip_id"], r["start_s"], r["type"], r["source"])
    )
    return RuleComparison(since, until, counts.clips, counts.tel, _per_type(out), out)


def _judged(conn: Connection, clip_ids: Sequence[str]) -> dict[str, frozenset[EventType]]:
    """The rule types each clip's stored telemetry could show (`schemas.motion_rules.judged`)."""
    if not clip_ids:
        return {}
    rows = conn.execute(
        text("SELECT clip_id, telemetry FROM clips WHERE clip_id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        ),
        {"ids": list(clip_ids)},
    )
    return {r.clip_id: judged(_SAMPLES.validate_python(r.telemetry or [])) for r in rows}


def _per_type(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rule type, the number of clips with at least one event of each outcome."""
    clips: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        clips.setdefault((r["type"], r["outcome"]), set()).add(r["clip_id"])
    return [{"type": t.value, **{o: len(clips.get((t.value, o), ())) for o in OUTCOMES}} for t in RULE_TYPES]


def clip_rule_events(conn: Connection, clip_id: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clip's rule events for its page, each with `agrees` (an answer's event of its type is near), and each of
    the answer's `events` of a rule type marked in place with `rules`: its outcome against them (`both`,
    `model_only` or `unjudged`; None for the types the rules do not report)."""
    found = [
        dict(r)
        for r in conn.execute(
            text("""SELECT type, start_s, end_s, peak, thresholds, clip_revision FROM rule_events
                    WHERE clip_id = :clip ORDER BY start_s, type"""),
            {"clip": clip_id},
        ).mappings()
    ]
    rule_side = [_Event(EventType(r["type"]), r["start_s"], r["end_s"], r) for r in found]
    kinds = {t.value for t in RULE_TYPES}
    model_side = [
        _Event(EventType(e["type"]), e["start_s"], e["end_s"], e) for e in events if e["type"] in kinds
    ]
    for event, agreed in zip(rule_side, matched(rule_side, model_side), strict=True):
        event.row["agrees"] = agreed
    seen: frozenset[EventType] = frozenset()
    agreements = matched(model_side, rule_side)
    if not all(agreements):
        seen = _judged(conn, [clip_id]).get(clip_id, frozenset())
    for e in events:
        e["rules"] = None
    for event, agreed in zip(model_side, agreements, strict=True):
        event.row["rules"] = "both" if agreed else "model_only" if event.type in seen else "unjudged"
    return found


def rules_window(latest: date | None, since: date | None, until: date | None, days: int) -> tuple[date, date]:
    """[since, until) as given; `until` else the day after `latest` (the fleet's latest driving, else today), `since`
    else `days` days before `until`."""
    end = until or (latest or date.today()) + timedelta(days=1)
    try:
        start = since or end - timedelta(days=days)
    except OverflowError:  # a window reaching back past year 1 starts there
        start = date.min
    return start, end


__all__ = ["OUTCOMES", "ROW_COLUMNS", "RuleComparison", "clip_rule_events", "compare_rules", "rules_window"]
