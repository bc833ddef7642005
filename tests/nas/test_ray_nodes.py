"""A search across two Ray nodes on this machine (``ray.cluster_utils.Cluster``: two raylets,
each with its own resources and processes), one of which dies mid-search: its candidates run
again on the other node, nothing is lost or journaled twice, and the front is the one of a
single-node run with the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.nas.conftest import _module

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, os, sys, threading, time
import ray
from ray.cluster_utils import Cluster
from capslab.nas.config import SearchConfig
from capslab.nas.evaluate import Evaluator
from capslab.nas.journal import Journal
from capslab.nas.schema import database_url
from capslab.nas.search import run_search
from tests.nas.conftest import FakeAccuracy, journal_rows

out = sys.argv[1]
calls_dir = os.path.join(out, "calls")
os.makedirs(calls_dir)


class Recorded(FakeAccuracy):
    """FakeAccuracy that leaves a file per call: the node it ran on, the candidate, the rung."""

    def __call__(self, genotype, time_limit=None, epochs=None):
        import uuid
        from capslab.nas.space import genotype_key
        node = ray.get_runtime_context().get_node_id()
        with open(os.path.join(calls_dir, uuid.uuid4().hex), "w") as f:
            json.dump({"node": node, "key": genotype_key(genotype), "epochs": epochs}, f)
        return super().__call__(genotype, time_limit, epochs)


cfg = SearchConfig(training={"model": "genotype", "dataset": "mnist", "epochs": 3},
                   generations=2, population=4, offspring=4, seed=3, rungs=(1, 3), promote=0.5)
space = cfg.build_space()
reference = run_search(cfg, os.path.join(out, "reference"),
                       evaluator=Evaluator(FakeAccuracy(), space=space, rungs=cfg.rungs))

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
second = cluster.add_node(num_cpus=2)
second_id = second.node_id
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
run_dir = os.path.join(out, "two-nodes")
seen = {}

def kill_second_node():
    """Once a few candidates are journaled, the second node dies (no graceful shutdown)."""
    url = database_url(None, run_dir)
    while True:
        time.sleep(0.2)
        try:
            info = json.load(open(os.path.join(run_dir, "run.json")))
            with Journal(url, info["run_id"], retry_seconds=0) as journal:
                if journal.count() >= 2:
                    break
        except Exception:
            continue
    seen["nodes_before"] = len([n for n in ray.nodes() if n["Alive"]])
    cluster.remove_node(second, allow_graceful=False)
    seen["killed"] = True

killer = threading.Thread(target=kill_second_node, daemon=True)
killer.start()
result = run_search(cfg, run_dir, ray_address=cluster.address,
                    evaluator=Evaluator(Recorded(seconds=1.0), space=space, rungs=cfg.rungs))
killer.join(timeout=30)
seen["nodes_after"] = len([n for n in ray.nodes() if n["Alive"]])
rows, generations = journal_rows(database_url(None, run_dir), result.run_id)
ref_rows, ref_generations = journal_rows(database_url(None, os.path.join(out, "reference")),
                                         reference.run_id)
calls = [json.load(open(os.path.join(calls_dir, f))) for f in os.listdir(calls_dir)]
print(json.dumps({
    **seen,
    "calls": len(calls), "distinct_calls": len({(c["key"], c["epochs"]) for c in calls}),
    "calls_on_second_node": sum(c["node"] == second_id for c in calls),
    "same_journal": (rows, generations) == (ref_rows, ref_generations),
    "statuses": sorted({r[1] for r in rows.values()}),
    "same_front": sorted(result.front_keys) == sorted(reference.front_keys),
    "evaluations": result.evaluations, "reference_evaluations": reference.evaluations,
}))
ray.shutdown()
cluster.shutdown()
'''


def test_a_node_that_dies_mid_search_loses_nothing(tmp_path):
    _module("ray", "ray")
    script = tmp_path / "nodes.py"
    script.write_text(SCRIPT)
    # RAY_AUTH_MODE disabled: a new local cluster would otherwise write a token to
    # ~/.ray/auth_token, which every later driver on this machine then presents to other heads
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["killed"] and r["nodes_before"] == 2 and r["nodes_after"] == 1
    assert r["calls_on_second_node"] >= 1  # the second node did train candidates
    assert r["calls"] > r["distinct_calls"]  # and what it was training when it died ran again
    # the dead node's candidates ran again on the other one: every result once, as in a
    # single-node run with the same seed, and nothing failed
    assert r["statuses"] == ["ok"]
    assert r["same_journal"] and r["same_front"]
    assert r["evaluations"] == r["reference_evaluations"]
