"""A fix for a race in faust-streaming 0.15.3 that skips input records in a joiner that has just recovered its table.

When a table recovery ends, `Recovery.on_recovery_completed` (faust/tables/recovery.py) resumes the stream
partitions, then seeks them to their committed offsets (`Consumer.perform_seek`), then resumes the flow
(`app.flow_control.resume()`, `consumer.resume_flow()`). But the consumer's flow is already running: the recovery
resumed it to read the changelog. So as soon as the stream partitions are resumed, the Fetcher hands the agent the
records aiokafka fetched during the recovery, and it goes on doing so after the seek. Each record handed over after
the seek moves the consumer's read offset past the offsets the seek will fetch again. Then
`app.flow_control.resume()` clears the agent's queue (channels are `clear_on_resume`). The cleared records come back
after the seek, but `_drain_messages` drops them as already read ("DROPPED MESSAGE ROFF", a dev-level log line). The
agent never sees them: the joiner logs "offsets N-M of ... were never handed to this joiner".

The fix: stop the consumer's flow when stream partitions are resumed. The Fetcher then hands nothing over until
Faust resumes the flow. Every caller in Faust does that right after the seek, so reading starts at the committed
offsets. Changelog and standby partitions are resumed as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from faust.transport.consumer import Consumer
from faust.types import TP

_resume_partitions = Consumer.resume_partitions


def resume_partitions_with_flow_stopped(self: Consumer, tps: Iterable[TP]) -> None:
    tps = list(tps)
    if self.flow_active and any(not self._is_changelog_tp(tp) for tp in tps):
        self.stop_flow()
    _resume_partitions(self, tps)


def install() -> None:
    """Idempotent; called when the app module is imported."""
    if Consumer.resume_partitions is not resume_partitions_with_flow_stopped:
        Consumer.resume_partitions = resume_partitions_with_flow_stopped  # type: ignore[method-assign]
