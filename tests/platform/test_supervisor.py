"""The ``make run`` supervisor restarts a stopped process after a doubling, capped backoff and
keeps the others running (real processes, the supervisor's clock driven by the test)."""

import subprocess

import pytest

from agentidp.devenv import MAX_BACKOFF, STABLE_AFTER, Program, child_program

pytestmark = pytest.mark.django_db(databases=[])


def test_a_stopped_process_is_restarted_with_a_capped_doubling_backoff(
    capsys: pytest.CaptureFixture[str],
) -> None:
    program = child_program("sleeper", ["sleep", "60"], {"PATH": "/usr/bin:/bin"})
    bystander = child_program("bystander", ["sleep", "60"], {"PATH": "/usr/bin:/bin"})
    try:
        program.start()
        bystander.start()
        now = program.started_at
        delays = []
        for _ in range(7):
            program.stop()
            program.check(now)  # notices the exit, schedules the restart
            assert program.restart_at is not None
            delays.append(round(program.restart_at - now))
            program.check(now + 0.5 * (program.restart_at - now))
            assert not program._alive(), "restarted before its backoff ran out"
            now = program.restart_at
            program.check(now)
            assert program._alive()
            bystander.check(now)
            assert bystander._alive() and bystander.failures == 0
        assert delays == [1, 2, 4, 8, 16, MAX_BACKOFF, MAX_BACKOFF]
        program.check(now + STABLE_AFTER + 1)
        assert program.failures == 0, "a process that has run a while starts over at 1s"
    finally:
        program.stop()
        bystander.stop()
    said = capsys.readouterr().err
    assert "sleeper stopped; restarting in 1s (restart 1)" in said
    assert "sleeper restarted" in said and "bystander" not in said


def test_a_failed_restart_is_logged_and_tried_again(capsys: pytest.CaptureFixture[str]) -> None:
    attempts: list[int] = []

    def start() -> None:
        attempts.append(1)
        if len(attempts) > 1:
            raise subprocess.SubprocessError("port in use")

    program = Program("flaky", start, lambda: False)
    program.start()
    program.check(0.0)
    program.check(10.0)
    assert "flaky failed to restart: port in use" in capsys.readouterr().err
    program.check(10.1)
    assert program.restart_at is not None and program.failures == 2
