"""Failed studies of a bench run: each job's failure is kept apart (``JobFailure``), the
other studies are stored, and the run ends with one error naming them (``StudiesFailed``).

Kept light (no torch, no harness) so that the command line can catch it."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna_autopipe.bench.harness import Job


@dataclass(frozen=True)
class JobFailure:
    """Why a job's study did not finish: the exception's type, message and last traceback
    lines (picklable, so it crosses from a worker or the peers' environment)."""

    error: str
    trace: str

    @classmethod
    def current(cls) -> JobFailure:
        kind, exc, _ = sys.exc_info()
        name = kind.__name__ if kind else "Error"
        return cls(error=f"{name}: {exc}", trace=traceback.format_exc()[-2000:])


class StudiesFailed(RuntimeError):
    """Some studies of a bench run failed; the others were stored (a rerun resumes)."""

    def __init__(self, failed: Sequence[tuple[Job, JobFailure]]) -> None:
        self.failed = list(failed)
        listed = "\n".join(
            f"  {job.study_name}: {failure.error}" for job, failure in self.failed[:10]
        )
        more = f"\n  ... and {len(self.failed) - 10} more" if len(self.failed) > 10 else ""
        super().__init__(
            f"{len(self.failed)} {'study' if len(self.failed) == 1 else 'studies'} failed "
            f"(every other study is stored; rerun the same command to retry them):\n"
            f"{listed}{more}\nThe first one's traceback:\n{self.failed[0][1].trace}"
        )
