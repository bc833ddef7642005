"""A journal whose database goes away mid-search: ridden out when it comes back within the
retry time, one line and the resume command when it does not (CI's real PostgreSQL, stopped
and started by the test)."""

from __future__ import annotations

import os
import subprocess
import time

from capslab.nas.journal import Journal
from tests.nas.conftest import fake_cli, journal_rows, wait_for

COMMON = ["--generations", "2", "--population", "4", "--offspring", "3", "--seed", "11"]


def _evaluations(url: str, run_dir) -> int:
    import json

    info = json.loads((run_dir / "run.json").read_text())
    try:
        with Journal(url, info["run_id"], retry_seconds=0) as journal:
            return journal.count()
    except Exception:  # noqa: BLE001 - not there yet
        return 0


def _start(run_dir, url, *extra):
    env = {**os.environ, "CAPSLAB_FAKE_SECONDS": "0.4"}
    return subprocess.Popen(fake_cli("search", "run", *COMMON, "--workers", "1", "--db", url,
                                     "--out", str(run_dir), *extra),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_database_restart_is_ridden_out(postgres_restarts, tmp_path):
    url, server = postgres_restarts
    run = tmp_path / "run"
    search = _start(run, url)
    try:
        wait_for(lambda: (run / "run.json").exists() and _evaluations(url, run) >= 1, 120,
                 "a first journaled evaluation")
        server.stop()
        time.sleep(3)  # candidates finish meanwhile: their results wait
        server.start()
        out, err = search.communicate(timeout=300)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, out + err
    assert "Traceback" not in err
    import json

    info = json.loads((run / "run.json").read_text())
    rows, generations = journal_rows(url, info["run_id"])  # each candidate once
    assert [g[0] for g in generations] == [0, 1, 2]
    assert all(status == "ok" for _, status, *_ in rows.values())


def test_a_database_that_stays_away_stops_the_search_with_one_line(postgres_restarts, tmp_path):
    url, server = postgres_restarts
    run = tmp_path / "run"
    search = _start(run, url, "--db-retry", "4")
    try:
        wait_for(lambda: (run / "run.json").exists() and _evaluations(url, run) >= 1, 120,
                 "a first journaled evaluation")
        server.stop()
        out, err = search.communicate(timeout=300)
    finally:
        if search.poll() is None:
            search.kill()
        server.start()
    assert search.returncode == 1, out + err
    lines = [line for line in err.splitlines() if line.strip() and "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    line = " ".join(err.split())
    assert "stayed unreachable for 4 s" in line and "postgresql+psycopg://" in line
    assert f"capslab search resume {run}" in line
    # once it is back, the resume command completes the run
    resumed = subprocess.run(fake_cli("search", "resume", str(run), "--db", url, "--quiet"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
