"""``make run`` as a terminal runs it: one process group. Everything it starts, and everything
its supervisor restarts (here the embedded PostgreSQL, killed and brought back), stays in that
group, so stopping the group stops all of it: no process is left using the data directory."""

import os
import signal
import time

import pytest

from tests.live import stack_start

pytestmark = pytest.mark.django_db(databases=[])


def test_killing_the_group_leaves_nothing_running_after_a_restart() -> None:
    stack = stack_start()
    try:
        first = stack.postgres_pid()
        assert os.getpgid(first) == stack.process.pid  # the server is in the group
        os.kill(first, signal.SIGKILL)
        assert stack.supervisor_said("embedded PostgreSQL restarted", timeout=60), (
            stack.log.read_text()[-3000:]
        )
        stack.wait_ready()
        restarted = stack.postgres_pid()
        assert restarted != first and os.getpgid(restarted) == stack.process.pid
        assert stack.processes_using_data(), "the stack should be using its data directory"
    finally:
        os.killpg(stack.process.pid, signal.SIGKILL)  # no chance to clean up: the group only
    stack.process.wait(timeout=10)
    deadline = time.monotonic() + 20
    while stack.processes_using_data() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.processes_using_data() == []
