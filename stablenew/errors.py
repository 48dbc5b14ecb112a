"""The one exception tree of StableNew.

::

    StableNewError
    ├── ConfigError (ValueError)            a settings file or variable is invalid
    ├── PackError (ValueError)              a pack has problems; carries every PackIssue at once
    ├── JobIdMismatch (ValueError)          a record's job_id is not the id its content gives
    ├── WebUIError                          anything the WebUI boundary raises
    │   ├── WebUIUnreachable                connection refused / reset / DNS   (retryable)
    │   ├── WebUITimeout                    no answer within the read timeout  (retryable)
    │   ├── WebUIAuthError                  401                                (not retryable)
    │   ├── WebUIRequestRejected            422 / 404 / 400: the request is wrong (not retryable)
    │   ├── WebUIServerError                500 and other 5xx                  (retryable)
    │   │   └── WebUIOutOfMemory            CUDA OOM                           (retryable)
    │   └── WebUIInterrupted                answered 200 after an interrupt    (not retryable)
    ├── OrchestrationError                  Prefect-side problems
    │   ├── PrefectUnavailable              no Prefect API at the URL tried
    │   ├── SubmissionError                 a submit call failed; says what was rolled back
    │   │   ├── DuplicateJob (ValueError)   an identical job is already queued, running or done
    │   │   └── InvalidRecords (ValueError) records refused before anything was queued
    │   └── JobNotQueued (ValueError)       move/edit of a job that is no longer waiting
    ├── JobNotFound (LookupError)           no job with that id
    │   └── AmbiguousJobId                  a job id prefix that more than one job starts with
    └── HistoryError                        the history store failed (never fails a job)

Library exceptions are translated once per boundary (``raise ... from e``), so callers only
ever catch these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stablenew.redact import redact_url


class StableNewError(Exception):
    """Root of every error StableNew raises on purpose."""


class ConfigError(StableNewError, ValueError):
    """Settings could not be loaded; names the file or variable."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


@dataclass(frozen=True, slots=True)
class PackIssue:
    """One problem in a pack, located as precisely as the input allows."""

    path: str
    line: int | None
    field: str
    expected: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        field = self.field or "<pack>"
        return f"{where}: {field}: {self.expected}"


class PackError(StableNewError, ValueError):
    """A pack was rejected. ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: Sequence[PackIssue]) -> None:
        if not issues:
            raise ValueError("PackError needs at least one issue")
        self.issues: tuple[PackIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    @property
    def path(self) -> str:
        return self.issues[0].path


class JobIdMismatch(StableNewError, ValueError):
    """A record whose ``job_id`` is not the id its content gives: forged, or edited after it
    was built. Records are refused with it, never trusted by their id."""

    def __init__(self, job_id: str, expected: str) -> None:
        self.job_id = job_id
        self.expected = expected
        super().__init__(
            f"job {job_id}: job_id is not the id the record's content gives; expected {expected}"
        )


class WebUIError(StableNewError):
    """A call to the WebUI failed.

    ``body`` is a short excerpt of the response (never request data, so no credentials),
    ``retryable`` tells the caller whether the same request may succeed later.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        body: str = "",
        retryable: bool | None = None,
    ) -> None:
        self.url = redact_url(url)  # a message is shown and logged: never with credentials
        self.status = status
        self.body = body[:500]
        if retryable is not None:
            self.retryable = retryable
        status_part = f" [{status}]" if status is not None else ""
        super().__init__(f"{message}{status_part} ({self.url})")


class WebUIUnreachable(WebUIError):
    retryable = True


class WebUITimeout(WebUIError):
    retryable = True


class WebUIAuthError(WebUIError):
    retryable = False


class WebUIRequestRejected(WebUIError):
    """The WebUI refused the request itself (422 validation, unknown script, missing image).

    ``field`` is the offending field path from a 422 ``detail`` (e.g. ``body.steps``), if any.
    """

    retryable = False

    def __init__(self, message: str, *, field: str | None = None, **kwargs: object) -> None:
        self.field = field
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class WebUIServerError(WebUIError):
    retryable = True


class WebUIOutOfMemory(WebUIServerError):
    retryable = True


class WebUIInterrupted(WebUIError):
    """The job was interrupted; A1111 still answers 200 with the partial images."""

    retryable = False


class OrchestrationError(StableNewError):
    """Prefect-side failure."""


class PrefectUnavailable(OrchestrationError):
    def __init__(self, url: str, reason: str = "") -> None:
        self.url = redact_url(url)
        detail = f": {reason}" if reason else ""
        super().__init__(f"no Prefect server reachable at {self.url}{detail}")


class SubmissionError(OrchestrationError):
    """Submitting jobs failed; nothing from this call stays queued."""

    def __init__(self, message: str, *, rolled_back: Sequence[str] = ()) -> None:
        self.rolled_back = tuple(rolled_back)
        suffix = f" ({len(self.rolled_back)} created run(s) cancelled)" if self.rolled_back else ""
        super().__init__(message + suffix)


class DuplicateJob(SubmissionError, ValueError):
    """An identical job (same record, so same id) already has a run that is queued, running
    or completed; submitting it again takes an explicit request. Bad input, not a failure."""

    def __init__(
        self, job_id: str, existing: str, *, rolled_back: Sequence[str] = (), prefix: str = ""
    ) -> None:
        self.job_id = job_id
        self.existing = existing
        super().__init__(
            f"{prefix}job {job_id} is already submitted ({existing}); to run it again use "
            "`--allow-duplicates` (CLI) or `allow_duplicates=True` (SDK)",
            rolled_back=rolled_back,
        )


@dataclass(frozen=True, slots=True)
class RecordProblem:
    """One record refused at submission: its place in the call, its job id (as given, may be
    empty), the field and what was expected there."""

    index: int
    job_id: str
    field: str
    expected: str

    def __str__(self) -> str:
        job = f" (job {self.job_id})" if self.job_id else ""
        return f"record #{self.index}{job}: {self.field or '<record>'}: {self.expected}"


class InvalidRecords(SubmissionError, ValueError):
    """Records refused before anything was created: invalid fields (however the record was
    made), a ``job_id`` that is not the id its content gives, or a job twice in one call.
    ``problems`` lists every one; nothing of the call was queued. Bad input, not a failure."""

    def __init__(self, problems: Sequence[RecordProblem]) -> None:
        if not problems:
            raise ValueError("InvalidRecords needs at least one problem")
        self.problems: tuple[RecordProblem, ...] = tuple(problems)
        shown = "\n".join(str(p) for p in self.problems[:20])
        more = len(self.problems) - 20
        tail = f"\n... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} invalid record(s), nothing queued:\n{shown}{tail}")


class JobNotQueued(OrchestrationError, ValueError):
    """The job's latest run is no longer waiting in its queue (running, staged or finished):
    it cannot be moved or edited."""

    def __init__(self, job_id: str, state: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(
            f"job {job_id} is {state}, not queued: only a queued job can be moved or edited"
        )


class JobNotFound(StableNewError, LookupError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class AmbiguousJobId(JobNotFound):
    """A job id prefix that more than one job starts with: bad input, like an unknown id.

    ``candidates`` holds the first few matching ids in id order; ``more`` says whether there
    are others beyond them.
    """

    def __init__(self, prefix: str, candidates: Sequence[str], *, more: bool = False) -> None:
        super().__init__(prefix)
        self.candidates = tuple(candidates)
        self.more = more
        listed = ", ".join(self.candidates) + (", ..." if more else "")
        self.args = (f"job id prefix {prefix!r} matches more than one job: {listed}",)


class HistoryError(StableNewError):
    """The history store failed. Logged and retried; it never fails a job."""
