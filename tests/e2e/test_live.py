"""Live (unbounded) runs on a real broker: the idle policy and SIGTERM.

A live run emits a day once every partition's watermark has passed it. Here
one of the four input partitions receives nothing at all, so without the
idle policy no day could ever be emitted; with idle.timeout.ms the silent
partition follows the group and every day but the last becomes final. The
days emitted are compared with the oracle exactly, and SIGTERM must end the
member cleanly (exit 0) after committing.
"""
import json
import os
import signal
import subprocess
import time

import pytest

import harness
import oracle

pytestmark = pytest.mark.broker

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def gen_without_partition(engage_bin, tmp_path, empty_partition=3):
    full = tmp_path / "full.jsonl"
    harness.run_cmd([engage_bin, "gen", "--users", "600", "--days", "12", "--partitions", "4",
                     "--seed", "11", "-o", str(full)], str(tmp_path / "gen.log"))
    out = tmp_path / "events.jsonl"
    with open(full) as src, open(out, "w") as dst:
        for line in src:
            if json.loads(line).get("partition") != empty_partition:
                dst.write(line)
    return str(out)


def start_live(p, extra_args=()):
    log = open(p.log_path, "ab")
    proc = subprocess.Popen([p.bin, "run", "-c", p.conf_path, *extra_args], cwd=ROOT,
                            stdout=log, stderr=log)
    log.close()
    return proc


def test_idle_partition_follows_the_group_and_sigterm_is_clean(make_pipeline, engage_bin,
                                                               tmp_path):
    events = gen_without_partition(engage_bin, tmp_path)
    expected = oracle.compute(oracle.read_jsonl(events))
    all_days = [d["date"] for d in expected["daily"]]
    # Live, the last day(s) stay open: a day is final once every partition's
    # watermark (max event time - grace) passed its end and its sessions
    # closed. So expect a prefix missing at most the last two days.
    want_days = all_days[:-2]
    assert len(want_days) >= 8

    p = make_pipeline("idle", extra_conf={"idle.timeout.ms": "2000",
                                          "kafka.session.timeout.ms": "6000"})
    p.produce(events)
    proc = start_live(p)
    try:
        deadline = time.monotonic() + 120
        got = []
        while time.monotonic() < deadline:
            try:
                got = p.read_raw("daily")
            except Exception as e:  # e.g. leadership still settling right after creation
                print("read_raw:", e)
                time.sleep(1)
                continue
            if len(got) >= len(want_days):
                break
            assert proc.poll() is None, "engage run exited\n" + harness.tail(p.log_path)
            time.sleep(1)
        assert len(got) >= len(want_days), (f"only {len(got)} of {len(want_days)} days "
                                            "emitted\n" + harness.tail(p.log_path))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    assert rc == 0, f"SIGTERM: exit {rc}\n" + harness.tail(p.log_path)
    log = open(p.log_path).read()
    assert "partition 3 idle" in log, harness.tail(p.log_path)

    daily = [harness.decode_output("daily", r.value) for r in p.read_raw("daily")]
    dates = sorted(d["date"] for d in daily)  # the topic has several partitions
    assert dates == all_days[:len(dates)], f"emitted {dates}, not a prefix of {all_days}"
    exp = {d["date"]: d for d in expected["daily"]}
    for d in daily:
        e = exp[d["date"]]
        for f in ("dau", "wau", "mau", "sessions", "session_users"):
            assert d[f] == e[f], (d["date"], f, e[f], d[f])
        for f in ("avg_duration_ms", "actions_per_session"):
            assert d[f] == pytest.approx(e[f], rel=1e-9, abs=1e-12), (d["date"], f)

    # A bounded run in the same group then finishes the last day, exactly.
    p.run()
    actual, _ = p.actual_from_raw()
    harness.assert_oracle(expected, actual, "live run finished by a bounded run")
