"""A fix for a race in faust-streaming 0.15.3 that skips input records in a joiner that has just recovered its table:
stop the consumer's flow when stream partitions are resumed, so the Fetcher hands nothing over until Faust resumes
the flow right after its seek to the committed offsets. Changelog and standby partitions are resumed as before.
The race, how it was found and measured: docs/knowledge.md ("faust-streaming 0.15.3 skips input records")."""

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
