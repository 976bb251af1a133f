"""The one closing of every verifier (``compute.verify.Summary``): units' reports land in any order, their
problems are listed in unit order, the counts are complete and, with ``listed``, the lists are cut."""

from __future__ import annotations

from typing import Any, cast

import pytest

from compute.verify import HEADER_POSITION, ChunkReport, FailedChunk, Summary


def _report(*problems: str, ballots: int = 0) -> ChunkReport:
    return ChunkReport(
        ballots=ballots, problems=list(problems), failed_ballots=[p.split()[0] for p in problems]
    )


def test_reports_landing_in_any_order_are_listed_in_unit_order() -> None:
    summary = Summary(cast(Any, None))  # no close: the check is not needed
    summary.add(3, _report("c3-a", ballots=2), "chunk 3")
    summary.add(1, _report(ballots=4), "chunk 1")
    summary.add(4, _report("tally-a"), None, chunk=False)
    summary.add(HEADER_POSITION, _report("header-a", "header-b"), chunk=False)
    summary.add(2, _report("c2-a", "c2-b", ballots=4), "chunk 2")
    assert summary.problems == ["header-a", "header-b", "c2-a", "c2-b", "c3-a", "tally-a"]
    assert summary.chunks_with_problems == ["chunk 2", "chunk 3"]  # chunk 1 had none; unnamed units are not
    assert summary.failed_ballots == ["header-a", "header-b", "c2-a", "c2-b", "c3-a", "tally-a"]
    assert (summary.problem_count, summary.failed_ballot_count, summary.chunks) == (6, 6, 3)
    assert summary.totals.ballots == 10 and summary.totals.problems == []  # listed here, not in Totals


def test_with_listed_the_counts_stay_complete_and_the_lists_are_cut() -> None:
    summary = Summary(cast(Any, None), listed=3)
    summary.add(HEADER_POSITION, _report("h1"), "the election", chunk=False)
    for n in range(1, 5):
        summary.add(n, _report(f"c{n}-a", f"c{n}-b"), f"chunk {n}")
    assert summary.problems == ["h1", "c1-a", "c1-b"]
    assert summary.chunks_with_problems == ["the election", "chunk 1", "chunk 2"]
    assert (summary.problem_count, summary.failed_ballot_count, summary.chunks) == (9, 9, 4)


def test_failed_units_are_named_in_unit_order() -> None:
    summary = Summary(cast(Any, None))
    summary.fail(9, FailedChunk("the tally's shares", "WorkerCrashedError: x"))
    summary.fail(2, FailedChunk("chunk 2", "ValueError: y"))
    assert [f.chunk for f in summary.failed] == ["chunk 2", "the tally's shares"]


def test_a_position_reported_twice_is_refused_not_overwritten() -> None:
    summary = Summary(cast(Any, None))
    summary.add(1, _report("c1-a"), "chunk 1")
    with pytest.raises(ValueError, match="position 1 reported twice"):
        summary.fail(1, FailedChunk("chunk 1", "ValueError: y"))
    with pytest.raises(ValueError, match="position 1 reported twice"):
        summary.add(1, _report(), "chunk 1")
    assert summary.problems == ["c1-a"]
