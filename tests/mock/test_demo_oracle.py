"""The embedded default (`engage demo`, librdkafka mock cluster) against the
independent oracle: every day's metrics must match exactly.

No broker needed; this also checks the demo's --json contract (field names).
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
import oracle  # noqa: E402

ENGAGE = os.environ.get("ENGAGE_BIN", os.path.join(ROOT, "build", "engage"))
FIELDS = ["date", "dau", "wau", "mau", "sessions", "session_users",
          "avg_duration_ms", "actions_per_session"]


def run_demo(events, partitions, extra=()):
    out = subprocess.run(
        [ENGAGE, "demo", "--events", str(events), "--partitions", str(partitions),
         "--json", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]


def check_daily(expected, actual):
    assert [list(d.keys()) for d in actual] == [FIELDS] * len(actual)
    exp = {d["date"]: d for d in expected["daily"]}
    act = {d["date"]: d for d in actual}
    assert len(act) == len(actual), "a date was emitted twice"
    assert sorted(exp) == sorted(act)
    for date, e in exp.items():
        a = act[date]
        for f in ("dau", "wau", "mau", "sessions", "session_users"):
            assert a[f] == e[f], (date, f, e[f], a[f])
        for f in ("avg_duration_ms", "actions_per_session"):
            assert a[f] == pytest.approx(e[f], rel=1e-9, abs=1e-12), (date, f)


@pytest.mark.parametrize("partitions,seed", [(4, 42), (3, 7)])
def test_generated_workload(tmp_path, partitions, seed):
    events = tmp_path / "events.jsonl"
    subprocess.run([ENGAGE, "gen", "--users", "800", "--days", "33", "--partitions",
                    str(partitions), "--seed", str(seed), "-o", str(events)],
                   check=True, cwd=ROOT, capture_output=True)
    expected = oracle.compute(oracle.read_jsonl(str(events)), oracle.Params())
    assert expected["daily"], "the generator produced no days"
    check_daily(expected, run_demo(events, partitions))


def test_edge_cases(tmp_path):
    events = tmp_path / "edge.jsonl"
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "oracle", "edge_cases.py"),
                    "--out", str(events)], check=True, cwd=ROOT)
    expected = oracle.compute(oracle.read_jsonl(str(events)), oracle.Params())
    actual = run_demo(events, 4, ["-X", "input.schemas=1=schemas/user_action.avsc,"
                                         "2=tests/fixtures/user_action_v2.avsc"])
    check_daily(expected, actual)


def test_demo_refuses_what_the_mock_cannot_hold(tmp_path):
    events = tmp_path / "big.jsonl"
    subprocess.run([ENGAGE, "gen", "--users", "20000", "--days", "35", "--partitions", "1",
                    "-o", str(events)], check=True, cwd=ROOT, capture_output=True)
    out = subprocess.run([ENGAGE, "demo", "--events", str(events), "--partitions", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "do not fit the mock cluster" in out.stderr
