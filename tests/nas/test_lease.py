"""One writer per run: the journal's lease, its heartbeat, refusal and take-over."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from capslab.errors import RunBusyError
from capslab.nas.journal import Journal
from capslab.nas.lease import RunLease
from capslab.nas.schema import database_url, leases_table
from tests.nas.conftest import fake_cli, journal_rows, wait_for


def _age(journal: Journal, seconds: float) -> None:
    """Make the run's lease look silent for ``seconds`` (as if its holder had died then)."""
    old = datetime.now(UTC) - timedelta(seconds=seconds)
    with journal.engine.begin() as conn:
        conn.execute(update(leases_table).where(leases_table.c.run_id == journal.run_id)
                     .values(heartbeat_at=old))


def test_one_holder_a_refusal_a_takeover(journal_url):
    with Journal(journal_url, "leased") as journal:
        journal.create_run(0, {})
        assert journal.acquire_lease("host-a:1:aa", stale_after=60) is None
        assert journal.acquire_lease("host-a:1:aa", stale_after=60) is None  # its own: renewed
        with pytest.raises(RunBusyError, match=r"run 'leased' is driven by host-a:1:aa \(since "
                           r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, last heartbeat 0 s ago\)"):
            journal.acquire_lease("host-b:2:bb", stale_after=60)
        assert journal.heartbeat("host-a:1:aa")
        _age(journal, 120)
        taken = journal.acquire_lease("host-b:2:bb", stale_after=60)
        assert taken["holder"] == "host-a:1:aa"
        assert not journal.heartbeat("host-a:1:aa")  # the old holder learns it lost the lease
        journal.release_lease("host-a:1:aa")  # releases nothing of another holder's
        assert journal.lease()["holder"] == "host-b:2:bb"
        journal.release_lease("host-b:2:bb")
        assert journal.lease() is None


def test_a_dead_local_holder_is_recognised():
    import socket

    from capslab.nas.lease import holder_dead, holder_name

    assert not holder_dead(holder_name())  # this process
    host = socket.gethostname()
    gone = subprocess.Popen(["sleep", "0"])
    gone.wait()
    assert holder_dead(f"{host}:{gone.pid}:abc")
    assert not holder_dead(f"elsewhere:{gone.pid}:abc")  # another machine's: never judged


def test_the_lease_beats_and_is_released(tmp_path):
    with Journal(database_url(None, tmp_path), "beats") as journal:
        journal.create_run(0, {})
        with RunLease(journal, heartbeat=0.05, stale_after=1.0) as lease:
            first = journal.lease()["heartbeat_at"]
            wait_for(lambda: journal.lease()["heartbeat_at"] > first, 5, "a heartbeat")
            assert journal.lease()["holder"] == lease.holder and not lease.lost
            with pytest.raises(RunBusyError):
                RunLease(journal).__enter__()
        assert journal.lease() is None
        # a lease taken over while its holder still runs: the holder sees it at its next beat
        with RunLease(journal, heartbeat=0.05, stale_after=1.0) as lease:
            _age(journal, 10)
            journal.acquire_lease("other:9:zz", stale_after=1.0)
            wait_for(lambda: lease.lost, 5, "the lost lease to be noticed")
        assert journal.lease()["holder"] == "other:9:zz"  # not released by the old holder


def test_a_second_writer_is_refused_and_a_dead_ones_lease_taken_over(tmp_path):
    run, hold = tmp_path / "run", tmp_path / "hold"
    hold.touch()
    env = {**os.environ, "CAPSLAB_FAKE_HOLD": str(hold)}
    common = ["--generations", "1", "--population", "4", "--offspring", "2", "--seed", "5"]
    first = subprocess.Popen(fake_cli("search", "run", *common, "--out", str(run), "--quiet"),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (run / "run.json").exists(), 60, "the first search to start")
        # the case: a second writer started while the first one runs
        second = subprocess.run(fake_cli("search", "resume", str(run), "--quiet"), env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        lines = [ln for ln in (second.stdout + second.stderr).splitlines() if ln.strip()]
        assert len(lines) == 1 and "is driven by" in lines[0] and str(first.pid) in lines[0]
        # readers need no lease (the report only finds nothing evaluated yet)
        report = subprocess.run(fake_cli("search", "report", str(run)), capture_output=True,
                                text=True, timeout=120)
        assert "driven by" not in report.stdout + report.stderr
        assert "holds no evaluation yet" in report.stderr
        first.send_signal(signal.SIGKILL)  # the writer dies: its lease stays, silent
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    hold.unlink()
    from capslab.nas.config import open_journal

    journal, info = open_journal(run)
    with journal:  # the killed writer's lease is still there, beaten moments ago
        assert journal.lease()["holder"].split(":")[1] == str(first.pid)
    # it was a process of this machine and is gone: taken over at once, no need to wait
    resumed = subprocess.run(fake_cli("search", "resume", str(run)), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "took the run over from" in resumed.stdout + resumed.stderr
    rows, generations = journal_rows(info["db"], info["run_id"])  # each candidate once
    assert [g[0] for g in generations] == [0, 1] and len(rows) >= 4
    with Journal(info["db"], info["run_id"]) as journal:
        assert journal.lease() is None and journal.run_info()["status"] == "finished"
