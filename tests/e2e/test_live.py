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


def _owned(log_text, input_topic):
    """Input partitions a member owns at the end of its log (assigned minus
    revoked, in order)."""
    import re
    pat = re.compile(r"(assigned|revoked) " + re.escape(input_topic) + r" \[(\d+)\]")
    owned = set()
    for m in pat.finditer(log_text):
        (owned.add if m.group(1) == "assigned" else owned.discard)(int(m.group(2)))
    return sorted(owned)


def _assigned(log_text, input_topic):
    return _owned(log_text, input_topic)


def test_static_membership_restart_keeps_partitions_and_state(make_pipeline, engage_bin,
                                                              tmp_path):
    """Rolling restart with kafka.group.instance.id: the restarted member gets
    its partitions back without a rebalance of the others, and its local state
    is current (no restore)."""
    events = str(tmp_path / "ev.jsonl")
    harness.run_cmd([engage_bin, "gen", "--users", "400", "--days", "8", "--partitions", "4",
                     "--seed", "5", "-o", events], str(tmp_path / "gen.log"))
    a = make_pipeline("static-a", extra_conf={"kafka.group.instance.id": "pod-a",
                                              "kafka.session.timeout.ms": "20000",
                                              "idle.timeout.ms": "0"})
    a.produce(events)
    # the second member shares a's topics and group, with its own state dir
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b_conf = dict(a.conf, **{"kafka.group.instance.id": "pod-b",
                             "state.dir": str(b_dir / "state")})
    b_conf_path = b_dir / "engage.conf"
    b_conf_path.write_text("".join(f"{k}={v}\n" for k, v in b_conf.items()))
    b_log = b_dir / "engage.log"

    def start(conf_path, log_path):
        log = open(log_path, "ab")
        pr = subprocess.Popen([engage_bin, "run", "-c", str(conf_path)], cwd=ROOT, stdout=log,
                              stderr=log)
        log.close()
        return pr

    pa = start(a.conf_path, a.log_path)
    pb = start(b_conf_path, b_log)
    try:
        deadline = time.monotonic() + 90
        stable = 0
        while time.monotonic() < deadline and stable < 6:
            la, lb = open(a.log_path).read(), open(b_log).read()
            parts_a = _owned(la, a.topics["input"])
            parts_b = _owned(lb, a.topics["input"])
            ok = parts_a and parts_b and sorted(parts_a + parts_b) == [0, 1, 2, 3]
            stable = stable + 1 if ok else 0
            time.sleep(0.5)
        assert parts_a and parts_b, "both members should own partitions\n" + la + lb
        time.sleep(5)  # let them process and commit
        pa.send_signal(signal.SIGTERM)
        assert pa.wait(timeout=60) == 0, harness.tail(a.log_path)
        b_before = open(b_log).read()
        before_a = open(a.log_path).read()
        pa = start(a.conf_path, a.log_path)
        deadline = time.monotonic() + 60
        after = ""
        while time.monotonic() < deadline:
            after = open(a.log_path).read()[len(before_a):]
            if _assigned(after, a.topics["input"]):
                break
            time.sleep(0.5)
        time.sleep(3)
        after = open(a.log_path).read()[len(before_a):]
        assert _assigned(after, a.topics["input"]) == parts_a, after
        restored = [l for l in after.splitlines()
                    if "restored" in l and a.topics["input"] in l and " 0 records" not in l]
        assert not restored, "local state should have been current:\n" + "\n".join(restored)
        b_during = open(b_log).read()[len(b_before):]
        assert "revoked" not in b_during, "the other member was rebalanced:\n" + b_during
    finally:
        for pr in (pa, pb):
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
        for pr in (pa, pb):
            try:
                pr.wait(timeout=60)
            except subprocess.TimeoutExpired:
                harness.kill(pr)
