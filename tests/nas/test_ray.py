"""Candidates on a real Ray cluster (``CAPSLAB_TEST_RAY``, see ``conftest.py``): the journal of
a Ray search is the one of worker processes with the same seed, a Ray worker killed in the
middle of a candidate is retried (or, without retries, recorded as failed), never lost nor
journaled twice, and the search finishes. Candidates get a fake accuracy: the point here is
the scheduling, so no network is trained.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from capslab.errors import ConfigError
from capslab.nas.config import SearchConfig
from capslab.nas.evaluate import Evaluator
from capslab.nas.journal import Journal
from capslab.nas.parallel import RayPool, _check_ray_address
from capslab.nas.problem import CachedEvaluations
from capslab.nas.schema import database_url
from capslab.nas.search import run_search
from capslab.nas.space import genotype_key, sample
from tests.nas.conftest import (
    DiesOnce,
    FakeAccuracy,
    fake_accuracy_of,
    fake_cli,
    journal_rows,
    wait_for,
)

CLI_SEARCH = ("--dataset", "mnist", "--generations", "2", "--population", "4",
              "--offspring", "4", "--seed", "1")


@pytest.mark.parametrize("rungs", [(), ("--rungs", "1,2,3", "--promote", "0.5")],
                         ids=["one-fidelity", "rungs"])
def test_ray_search_gives_the_journal_of_worker_processes(ray_address, tmp_path, rungs):
    """``capslab search run --ray-address`` and ``--workers 2`` with the same seed: same
    genotypes, same objectives, same generations (and the same rungs); each evaluated away
    from the driver."""
    runs = {"ray": ("--ray-address", ray_address), "processes": ("--workers", "2")}
    started = {}
    for name, how in runs.items():  # both at once: most of the time is starting Python
        (tmp_path / f"pids-{name}").mkdir()
        started[name] = subprocess.Popen(
            fake_cli("search", "run", *CLI_SEARCH, *rungs, *how, "--out", str(tmp_path / name),
                     "--json"),
            env={**os.environ, "CAPSLAB_FAKE_PIDS": str(tmp_path / f"pids-{name}")},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results, rows = {}, {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        results[name] = json.loads(stdout)
        rows[name] = journal_rows(database_url(None, tmp_path / name), results[name]["run_id"])
        pids = {int(p.name) for p in (tmp_path / f"pids-{name}").iterdir()}
        assert pids and process.pid not in pids  # evaluated in workers, not by the driver

    assert rows["ray"] == rows["processes"]
    rung_rows = {}
    for name in runs:
        with Journal(database_url(None, tmp_path / name), results[name]["run_id"]) as journal:
            rung_rows[name] = {k: {r: (x.epochs, x.accuracy) for r, x in v.items()}
                               for k, v in journal.rung_records().items()}
    assert rung_rows["ray"] == rung_rows["processes"]
    assert bool(rung_rows["ray"]) == bool(rungs)
    evaluations, generations = rows["ray"]
    assert len(generations) == 3 and 4 < len(evaluations) <= 4 + 2 * 4
    assert all(status == "ok" for _, status, *_ in evaluations.values())
    assert results["ray"]["evaluated_now"] == results["ray"]["evaluations"] == len(evaluations)
    assert (sorted(r["key"] for r in results["ray"]["front"])
            == sorted(r["key"] for r in results["processes"]["front"]))


class Killer(threading.Thread):
    """Waits for :class:`DiesOnce`'s victim file, then kills that process with SIGKILL."""

    def __init__(self, folder):
        super().__init__(daemon=True)
        self.folder, self.victim, self.error = folder, None, None

    def run(self):
        try:
            path = self.folder / "victim.json"
            wait_for(path.exists, 120, "a candidate to start")
            self.victim = json.loads(path.read_text())
            os.kill(self.victim["pid"], signal.SIGKILL)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _config(**kw) -> SearchConfig:
    return SearchConfig(training={"model": "genotype", "dataset": "mnist"},
                        **{"generations": 1, "population": 4, "offspring": 4, "seed": 2, **kw})


def test_a_killed_ray_worker_is_retried_never_lost_or_doubled(ray_address, tmp_path):
    cfg = _config()
    reference = run_search(cfg, tmp_path / "reference",
                           evaluator=Evaluator(FakeAccuracy(), space=cfg.build_space()))
    killer = Killer(tmp_path)
    killer.start()
    result = run_search(cfg, tmp_path / "ray", ray_address=ray_address,
                        evaluator=Evaluator(DiesOnce(str(tmp_path)), space=cfg.build_space()))
    killer.join(timeout=10)
    assert killer.error is None and killer.victim is not None
    assert killer.victim["pid"] != os.getpid()  # a Ray worker died, not this driver

    rows, generations = journal_rows(database_url(None, tmp_path / "ray"), result.run_id)
    # Ray ran the killed candidate again: its result, and every other one, exactly once
    assert (rows, generations) == journal_rows(database_url(None, tmp_path / "reference"),
                                               reference.run_id)
    assert rows[killer.victim["key"]][1:3] == ("ok", fake_accuracy_of(killer.victim["key"]))
    assert result.front_keys == reference.front_keys
    assert result.evaluated_now == result.evaluations == reference.evaluations


def test_a_killed_ray_worker_without_retries_is_a_recorded_failure(ray_address, tmp_path):
    space = _config().build_space()
    rng = np.random.default_rng(5)
    genotypes = [sample(space, rng) for _ in range(3)]
    journal = Journal(database_url(None, tmp_path), "r")
    journal.create_run(0, {})
    cache = CachedEvaluations(None, journal)
    killer = Killer(tmp_path)
    killer.start()
    with RayPool(Evaluator(DiesOnce(str(tmp_path)), space=space), ray_address,
                 max_retries=0) as pool:
        answered = [genotype_key(g) for g, rec in pool.evaluate(genotypes) if cache.add(rec)]
    killer.join(timeout=10)
    assert killer.error is None and killer.victim is not None

    assert sorted(answered) == sorted(genotype_key(g) for g in genotypes)  # each once
    by_key = {r.key: r for r in journal.evaluations()}
    assert len(by_key) == journal.count() == 3
    victim = by_key.pop(killer.victim["key"])
    assert victim.status == "failed"
    assert victim.reason.startswith("out of memory or crashed: the Ray worker or its node died")
    assert all(r.ok and r.accuracy == fake_accuracy_of(r.key) for r in by_key.values())


def _raises(genotype):
    raise ValueError("a bug in the evaluator")


def test_an_evaluator_bug_on_ray_is_raised_not_recorded(ray_address):
    """As with worker processes: only a lost worker becomes a failed candidate."""
    genotype = sample(_config().build_space(), np.random.default_rng(0))
    with RayPool(_raises, ray_address) as pool, pytest.raises(ValueError, match="a bug"):
        list(pool.evaluate([genotype]))


def test_no_ray_cluster_at_the_address_is_one_clear_error():
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"no Ray cluster answers at 127.0.0.1:{port}"):
        _check_ray_address(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5  # ray.init alone would retry for minutes
    with pytest.raises(ConfigError, match="is not host:port"):
        _check_ray_address("head-node")
    _check_ray_address("auto")  # found by Ray itself
