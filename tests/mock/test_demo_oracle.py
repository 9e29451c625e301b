"""The embedded default (`engage demo`, librdkafka mock cluster) against the
independent oracle: every day's metrics must match exactly, including the
IQR session metrics of the compactor the demo runs after the processor.

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
          "avg_duration_ms", "actions_per_session",
          # SessionMetrics (engage compact), after the DailyMetrics fields
          "duration_q1", "duration_q3", "actions_q1", "actions_q3",
          "duration_lower_fence", "duration_upper_fence",
          "actions_lower_fence", "actions_upper_fence",
          "valid_sessions", "valid_users", "valid_avg_duration_ms",
          "valid_actions_per_session", "duration_outliers", "actions_outliers",
          "iqr_multiplier"]


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
    # the IQR fields: counts exactly, doubles within 1e-9 relative, nulls
    # where the day has no sessions
    diffs = oracle.compare_session_metrics(expected["session_metrics"], actual)
    assert not diffs, oracle.format_diffs(diffs)


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


@pytest.mark.parametrize("multiplier", [None, "0.5"])
def test_iqr_cases(tmp_path, multiplier):
    """Skewed days, one session, all equal (IQR = 0), midnight, fences."""
    events = tmp_path / "iqr.jsonl"
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "oracle", "iqr_cases.py"),
                    "--out", str(events)], check=True, cwd=ROOT)
    params = oracle.Params()
    extra = []
    if multiplier:
        params.iqr_multiplier = float(multiplier)
        extra = ["-X", f"compact.iqr.multiplier={multiplier}"]
    expected = oracle.compute(oracle.read_jsonl(str(events)), params)
    actual = run_demo(events, 4, extra)
    check_daily(expected, actual)
    by_date = {d["date"]: d for d in actual}
    assert any(d["duration_q1"] is None for d in actual)          # the empty day
    assert any(d["duration_outliers"] > 0 for d in actual)        # the skewed day
    assert all(d["iqr_multiplier"] == params.iqr_multiplier for d in actual)
    assert by_date["2026-03-03"]["valid_sessions"] == 12          # IQR = 0, all equal


def test_demo_refuses_what_the_mock_cannot_hold(tmp_path):
    events = tmp_path / "big.jsonl"
    subprocess.run([ENGAGE, "gen", "--users", "20000", "--days", "35", "--partitions", "1",
                    "-o", str(events)], check=True, cwd=ROOT, capture_output=True)
    out = subprocess.run([ENGAGE, "demo", "--events", str(events), "--partitions", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "do not fit the mock cluster" in out.stderr
