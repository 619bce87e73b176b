"""A fleet's worth of report data generated in SQL (INSERT ... SELECT on generate_series), for `bench reports`."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


EVENT_MIX = {  # share of detected events per type (a dashcam fleet: road events common, severe ones rare)
    "following_distance": 0.18,
    "speeding": 0.16,
    "harsh_braking": 0.12,
    "lane_departure": 0.10,
    "distraction": 0.10,
    "harsh_acceleration": 0.07,
    "harsh_turn": 0.06,
    "phone_use": 0.05,
    "no_seatbelt": 0.04,
    "rolling_stop": 0.04,
    "eating_drinking": 0.03,
    "drowsiness": 0.02,
    "smoking": 0.015,
    "forward_collision_risk": 0.01,
    "camera_obstructed": 0.005,
}

# Each step one INSERT ... SELECT (random() is seeded, so a size gives the same counts and distributions each run;
# ids differ by the run's prefix). Clips are inserted in time order, as they arrive; their ids are hashes, as the
# joiner's are. Steps after `clips` touch only this run's rows (joined to bench_clips), so a database may already
# hold others. Bound: prefix, fleets, vehicles, clips, days, end_day, end_epoch, reinfer, eventful, events,
# eventful_rows.
_GENERATE = [
    (
        "fleets",
        """
        INSERT INTO fleets (fleet_id, name)
        SELECT format('%s-f%s', :prefix, lpad(k::text, 2, '0')), format('Bench fleet %s', k)
        FROM generate_series(0, :fleets - 1) k""",
    ),
    (
        "model_versions",
        """
        INSERT INTO model_versions (version, path, stage, demo, metrics)
        VALUES ('bench-m1', '', 'retired', false, '{}'), ('bench-m2', '', 'production', false, '{}')
        ON CONFLICT DO NOTHING""",
    ),
    (
        "bench_vehicles",
        """
        CREATE TEMP TABLE bench_vehicles AS
        SELECT v, format('%s-v%s', :prefix, lpad(v::text, 5, '0')) AS vehicle_id,
               format('%s-f%s', :prefix, lpad(f::text, 2, '0')) AS fleet_id
        FROM (SELECT v, CASE WHEN v < :fleets THEN v ELSE floor(:fleets * power(random(), 1.5))::int END AS f
              FROM generate_series(0, :vehicles - 1) v) g""",
    ),  # every fleet a vehicle; low numbers bigger fleets
    (
        "vehicles",
        "INSERT INTO vehicles (vehicle_id, fleet_id) SELECT vehicle_id, fleet_id FROM bench_vehicles",
    ),
    (
        "drivers",
        """
        INSERT INTO drivers (driver_id, fleet_id)
        SELECT replace(vehicle_id, '-v', '-d') || shift, fleet_id
        FROM bench_vehicles CROSS JOIN (VALUES ('a'), ('b')) s(shift)
        WHERE shift = 'a' OR v % 4 = 0""",
    ),  # one vehicle in four is shared by two drivers
    (
        "bench_clips",
        """
        CREATE TEMP TABLE bench_clips AS
        SELECT md5(:prefix || n) AS clip_id, v.v, v.fleet_id, v.vehicle_id,
               CASE WHEN r < 0.02 THEN NULL  -- driver not identified
                    ELSE replace(v.vehicle_id, '-v', '-d') || CASE WHEN v.v % 4 = 0 AND r < 0.42 THEN 'b' ELSE 'a' END
               END AS driver_id, start_ts, start_ts + dur AS end_ts
        FROM (SELECT n, floor(random() * :vehicles)::int AS v, random() AS r,
                     extract(epoch FROM (:end_day - floor(random() * :days)::int)::timestamp)
                     + 5 * 3600 + random() * 16 * 3600 AS start_ts,  -- 05:00 to 21:00 UTC
                     CASE WHEN random() < 0.85 THEN 60.0 ELSE 10 + floor(random() * 50) END AS dur
              FROM generate_series(1, :clips) n) g
        JOIN bench_vehicles v USING (v)""",
    ),
    (
        "clips",
        """
        INSERT INTO clips (clip_id, fleet_id, vehicle_id, driver_id, start_ts, end_ts, views, frames_uri, num_frames,
                           frame_width, frame_height, sample_fps)
        SELECT clip_id, fleet_id, vehicle_id, driver_id, start_ts, end_ts, '["road", "driver"]',
               'file:///bench/clips/' || clip_id || '.npz', least(128, floor(2 * (end_ts - start_ts)))::int, 112, 140,
               2.0
        FROM bench_clips ORDER BY start_ts""",
    ),
    # One 1-minute upload per camera and clip. Telemetry per vehicle: 7 in 10 send it with the road camera, 2 in 10
    # only with the driver camera, 1 in 10 none, so every branch of report_driving's distance is exercised.
    (
        "segments",
        """
        INSERT INTO segments (segment_id, fleet_id, vehicle_id, camera, start_ts, end_ts, video_uri, distance_km)
        SELECT c.clip_id || '-' || s.camera, c.fleet_id, c.vehicle_id, s.camera, c.start_ts + s.skew,
               c.end_ts + s.skew, 'file:///bench/segments/' || c.clip_id || '-' || s.camera || '.mp4',
               CASE WHEN (s.camera = 'road' AND c.v % 10 < 7) OR (s.camera = 'driver' AND c.v % 10 IN (7, 8))
                    THEN (c.end_ts - c.start_ts) / 3600.0 * (20 + random() * 80) END
        FROM bench_clips c CROSS JOIN (VALUES ('road', 0.0), ('driver', 0.2)) s(camera, skew)
        ORDER BY c.start_ts""",
    ),
    (
        "clip_segments",
        """
        INSERT INTO clip_segments (clip_id, segment_id, fleet_id)
        SELECT c.clip_id, c.clip_id || '-' || s.camera, c.fleet_id
        FROM bench_clips c CROSS JOIN (VALUES ('road'), ('driver')) s(camera)
        ORDER BY c.start_ts""",
    ),
    # What the sink stores on each clip (schemas.distance.clip_distance_km): here one segment per camera spans the
    # clip (skewed), so the clip's distance is its share of the road segment's, else of the driver segment's.
    (
        "bench_clip_distance (clips.distance_km)",
        """
        UPDATE clips c SET distance_km = k.km
        FROM (SELECT cs.clip_id,
                     coalesce(max(s.share) FILTER (WHERE s.camera = 'road'),
                              max(s.share) FILTER (WHERE s.camera = 'driver')) AS km
              FROM clips c2 JOIN clip_segments cs ON cs.clip_id = c2.clip_id
              CROSS JOIN LATERAL (
                  SELECT s.camera, s.distance_km * greatest(least(c2.end_ts, s.end_ts) - greatest(c2.start_ts, s.start_ts),
                                                             0) / nullif(s.end_ts - s.start_ts, 0) AS share
                  FROM segments s WHERE s.segment_id = cs.segment_id) s
              WHERE c2.clip_id IN (SELECT clip_id FROM bench_clips)
              GROUP BY cs.clip_id) k
        WHERE k.clip_id = c.clip_id AND k.km IS NOT NULL""",
    ),
    (
        "inferences",
        """
        INSERT INTO inferences (fleet_id, clip_id, model_version, prompt_version, valid, error, description, raw_turn1,
                                raw_turn2, latency_ms, prompt_tokens, generated_tokens, updated_at, created_at)
        SELECT fleet_id, clip_id, 'bench-m1', 'cot-v1', ok, CASE WHEN NOT ok THEN 'turn 1: not valid JSON' END,
               'A delivery van on a two-lane road in daylight; the driver looks ahead, hands on the wheel.',
               '{"events": [{"type": "following_distance", "view": "road", "start": 12.0, "end": 18.5}], '
               '"description": "A delivery van on a two-lane road in daylight."}',
               'Keep at least a two-second gap to the vehicle ahead and brake earlier.', 250 + random() * 500,
               480 + floor(random() * 64)::int, 40 + floor(random() * 80)::int, at, at
        FROM (SELECT *, random() > 0.02 AS ok, to_timestamp(end_ts + 60 + random() * 600) AS at FROM bench_clips) c
        ORDER BY at""",
    ),
    # A newer model version re-answered some clips later: current_inferences must pick its answer.
    (
        "inferences (re-inferred)",
        """
        INSERT INTO inferences (fleet_id, clip_id, model_version, prompt_version, valid, description, raw_turn1,
                                raw_turn2, latency_ms, prompt_tokens, generated_tokens, updated_at, created_at)
        SELECT fleet_id, clip_id, 'bench-m2', 'cot-v1', true, description, raw_turn1, raw_turn2, latency_ms,
               prompt_tokens, generated_tokens, at, at
        FROM (SELECT i.*, i.updated_at + (1 + random() * 20) * interval '1 day' AS at
              FROM inferences i JOIN bench_clips USING (clip_id)
              WHERE random() < :reinfer) i
        ORDER BY at""",
    ),
    (
        "bench_eventful",
        """
        CREATE TEMP TABLE bench_eventful AS
        SELECT row_number() OVER (ORDER BY i.id) AS rn, i.id, i.fleet_id, c.start_ts, c.end_ts - c.start_ts AS dur
        FROM inferences i JOIN bench_clips c USING (clip_id)
        WHERE random() < :eventful""",
    ),  # the other answers found nothing
    (
        "events",
        """
        INSERT INTO events (fleet_id, inference_id, type, view, start_s, end_s, coaching_status)
        SELECT f.fleet_id, f.id, t.type, t.view, g.at * greatest(f.dur - 6, 0),
               g.at * greatest(f.dur - 6, 0) + 1 + 4 * g.len,
               CASE WHEN :end_epoch - f.start_ts > 14 * 86400  -- older events have mostly been dealt with
                    THEN CASE WHEN g.rs < 0.25 THEN 'needs_review' WHEN g.rs < 0.35 THEN 'needs_coaching'
                              WHEN g.rs < 0.80 THEN 'coached' ELSE 'dismissed' END
                    ELSE CASE WHEN g.rs < 0.65 THEN 'needs_review' WHEN g.rs < 0.80 THEN 'needs_coaching'
                              WHEN g.rs < 0.92 THEN 'coached' ELSE 'dismissed' END END
        FROM (SELECT 1 + floor(random() * :eventful_rows)::bigint AS rn, random() AS rt, random() AS at,
                     random() AS len, random() AS rs
              FROM generate_series(1, :events)) g
        JOIN bench_eventful f USING (rn)
        JOIN bench_types t ON g.rt >= t.lo AND g.rt < t.hi
        ORDER BY f.id""",
    ),
    (
        "instructions",
        """
        INSERT INTO instructions (inference_id, fleet_id, text)
        SELECT id, i.fleet_id, 'Keep at least a two-second gap to the vehicle ahead and brake earlier.'
        FROM inferences i JOIN bench_clips USING (clip_id)""",
    ),
    # Managers have reviewed about half the answers, the older ones more often.
    (
        "reviews",
        """
        INSERT INTO reviews (fleet_id, inference_id, reviewer, verdict, corrected_instruction, created_at)
        SELECT fleet_id, id, 'manager@' || fleet_id,
               CASE WHEN r < 0.80 THEN 'accepted' WHEN r < 0.95 THEN 'corrected' ELSE 'rejected' END,
               CASE WHEN r >= 0.80 AND r < 0.95 THEN 'Slow down before the junction and check the mirrors.' END, at
        FROM (SELECT i.*, random() AS r, i.updated_at + random() * interval '3 days' AS at
              FROM inferences i JOIN bench_clips USING (clip_id)
              WHERE random() < CASE WHEN i.updated_at > to_timestamp(:end_epoch) - interval '7 days'
                                    THEN 0.25 ELSE 0.55 END) i
        ORDER BY at""",
    ),
]
_PARAM_TYPES = {
    "prefix": "text",
    "fleets": "int",
    "vehicles": "int",
    "clips": "int",
    "days": "int",
    "end_day": "date",
    "end_epoch": "float8",
    "reinfer": "float8",
    "eventful": "float8",
    "events": "int",
    "eventful_rows": "bigint",
}
_TABLES = [
    "fleets",
    "vehicles",
    "drivers",
    "clips",
    "segments",
    "clip_segments",
    "inferences",
    "events",
    "instructions",
    "reviews",
    "event_facts",
    "answer_facts",
    "driver_week_facts",
]


def generate_report_data(
    conn: Connection,
    *,
    prefix: str,
    events: int,
    fleets: int,
    days: int,
    end_day: date,
    seed: float = 0.42,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Fleets to reviews for `events` detected events over `days` days ending `end_day`, in SQL (INSERT ... SELECT
    on generate_series), committed step by step; returns the rows per table."""
    from sqlalchemy import text

    say = progress or (lambda _msg: None)
    clips = max(fleets, round(events / 2.2))  # 2.2 events per clip on average; 0.65 of the answers have any
    params = {
        "prefix": prefix,
        "fleets": fleets,
        "vehicles": max(2 * fleets, events // 1250),
        "clips": clips,
        "days": days,
        "end_day": end_day,
        "end_epoch": float((end_day - date(1970, 1, 1)).days * 86400 + 86400),
        "reinfer": 0.10,
        "eventful": 0.65,
        "events": events,
    }
    names, upper = list(EVENT_MIX), list(itertools.accumulate(EVENT_MIX.values()))
    upper[-1] = 2.0  # random() < 1: the last type takes the rounding
    conn.execute(text("SELECT setseed(:seed)"), {"seed": seed})
    conn.execute(
        text(
            "CREATE TEMP TABLE bench_types AS SELECT b.type, t.view, b.lo, b.hi FROM (VALUES "
            + ", ".join(
                f"('{name}', {lo:.6f}, {hi:.6f})"
                for name, lo, hi in zip(names, [0.0, *upper[:-1]], upper, strict=True)
            )
            + ") b(type, lo, hi) JOIN event_types t USING (type)"
        )
    )
    rows: dict[str, int] = {}
    for step, sql in _GENERATE:
        started = time.perf_counter()
        if step == "events":
            params["eventful_rows"] = conn.execute(text("SELECT count(*) FROM bench_eventful")).scalar_one()
        for name, kind in _PARAM_TYPES.items():  # typed, so the server need not guess (format, power, ...)
            sql = re.sub(rf"(?<!:):{name}\b", f"CAST(:{name} AS {kind})", sql)
        count = conn.execute(text(sql), params).rowcount
        conn.commit()
        table = step.split(" ")[0]
        if not table.startswith("bench_"):
            rows[table] = rows.get(table, 0) + count
        say(f"{step}: {count:,} rows in {time.perf_counter() - started:.1f} s")
    conn.execute(text("DROP TABLE bench_types, bench_vehicles, bench_clips, bench_eventful"))
    conn.commit()
    return rows
