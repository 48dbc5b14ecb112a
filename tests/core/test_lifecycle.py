"""Lifecycle: the one Prefect-state mapping and the transition rules (illegal moves logged)."""

from __future__ import annotations

import logging

import pytest

from stablenew.lifecycle import (
    JobStatus,
    check_transition,
    is_legal_transition,
    status_from_prefect,
)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("SCHEDULED", JobStatus.QUEUED),
        ("PENDING", JobStatus.QUEUED),
        ("PAUSED", JobStatus.QUEUED),
        ("RUNNING", JobStatus.RUNNING),
        ("COMPLETED", JobStatus.COMPLETED),
        ("FAILED", JobStatus.FAILED),
        ("CRASHED", JobStatus.FAILED),
        ("CANCELLING", JobStatus.CANCELLING),
        ("CANCELLED", JobStatus.CANCELLED),
        ("running", JobStatus.RUNNING),
        (None, JobStatus.QUEUED),
    ],
)
def test_prefect_state_mapping(state: str | None, status: JobStatus) -> None:
    assert status_from_prefect(state) == status


def test_mapping_accepts_prefect_enum_and_rejects_unknown() -> None:
    from prefect.client.schemas.objects import StateType

    assert status_from_prefect(StateType.CRASHED) == JobStatus.FAILED  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown Prefect state"):
        status_from_prefect("EXPLODED")


def test_every_prefect_state_type_is_mapped() -> None:
    from prefect.client.schemas.objects import StateType

    for state in StateType:
        assert isinstance(status_from_prefect(state.value), JobStatus)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (JobStatus.SUBMITTED, JobStatus.QUEUED),
        (JobStatus.QUEUED, JobStatus.RUNNING),
        (JobStatus.QUEUED, JobStatus.CANCELLED),
        (JobStatus.RUNNING, JobStatus.COMPLETED),
        (JobStatus.RUNNING, JobStatus.FAILED),
        (JobStatus.RUNNING, JobStatus.CANCELLING),
        (JobStatus.CANCELLING, JobStatus.CANCELLED),
        (JobStatus.RUNNING, JobStatus.RUNNING),
        (JobStatus.RUNNING, JobStatus.QUEUED),  # handed back / its worker died
    ],
)
def test_legal_moves(old: JobStatus, new: JobStatus) -> None:
    assert is_legal_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (JobStatus.COMPLETED, JobStatus.RUNNING),
        (JobStatus.CANCELLED, JobStatus.QUEUED),
        (JobStatus.FAILED, JobStatus.COMPLETED),
        (JobStatus.SUBMITTED, JobStatus.RUNNING),
        (JobStatus.COMPLETED, JobStatus.QUEUED),
    ],
)
def test_illegal_moves_are_logged_with_both_states_and_the_job(
    old: JobStatus, new: JobStatus, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="stablenew.lifecycle"):
        assert check_transition("job-42", old, new) is False
    assert "job-42" in caplog.text
    assert old.value in caplog.text
    assert new.value in caplog.text


def test_terminal_and_active_flags() -> None:
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    }
    assert JobStatus.CANCELLING.is_active
    assert not JobStatus.SUBMITTED.is_active
