"""End-to-end tests: engage produce -> engage run --until-end on a real Kafka
broker, every output compared with the independent oracle (tests/oracle).

    python3 -m pytest tests/e2e -x -q
"""
import collections
import os
import random
import time

import pytest

import edge_cases
import harness
import oracle

pytestmark = pytest.mark.broker

# Keeps a SIGKILLed member from holding its partitions for librdkafka's
# default 45 s: the restarted member gets them after about 6 s (the broker's
# group.min.session.timeout.ms). Applied to every pipeline so runs compare
# like with like.
FAST_REJOIN = {"kafka.session.timeout.ms": "6000"}


def gen(engage_bin, path, *args):
    harness.run_cmd([engage_bin, "gen", *map(str, args), "-o", path],
                    os.path.join(os.path.dirname(path), "gen.log"))
    return path


def check_against_oracle(p: harness.Pipeline, expected: dict):
    """Both readers agree with each other and with the oracle."""
    raw_actual, _ = p.actual_from_raw()
    harness.assert_oracle(expected, raw_actual, f"outputs of {p.group} (confluent_kafka read)")
    dump_actual = p.actual_from_dump()
    harness.assert_oracle(expected, dump_actual, f"outputs of {p.group} (engage dump)")
    diffs = harness.check_dump_matches_raw(dump_actual, raw_actual)
    assert not diffs, "\n".join(diffs[:20])
    return raw_actual


def summary(exp):
    s = exp["stats"]
    return (f"{s['lines']} lines: {s['counted']} counted, {s['dup']} dup, {s['late']} late, "
            f"{s['dead']} dead; {s['sessions']} sessions over {s['days']} days")


# ------------------------------------------------------------------ (a)

def test_edge_cases(make_pipeline, tmp_path):
    events = str(tmp_path / "edge.jsonl")
    edge_cases.write(events)
    expected = oracle.compute(oracle.read_jsonl(events))
    assert expected["late"] and expected["dead_letters"]
    p = make_pipeline("edge", extra_conf=FAST_REJOIN)
    p.produce(events)
    p.run()
    check_against_oracle(p, expected)
    print("edge cases:", summary(expected))


# ------------------------------------------------------------------ (b)

def test_generated_workload(make_pipeline, engage_bin, tmp_path):
    events = gen(engage_bin, str(tmp_path / "gen.jsonl"), "--users", 3000, "--days", 40,
                 "--partitions", 4, "--seed", 7)
    lines = oracle.read_jsonl(events)
    expected = oracle.compute(lines)
    assert expected["users_on_multiple_partitions"] == []
    # the generator's human hints agree with the oracle's own derivation
    hints = collections.Counter(ln.get("expect", "counted") for ln in lines)
    derived = collections.Counter(oracle.outcomes(lines))
    assert hints == derived, f"gen hints {dict(hints)} != oracle {dict(derived)}"
    p = make_pipeline("gen", extra_conf=FAST_REJOIN)
    p.produce(events)
    p.run()
    check_against_oracle(p, expected)
    print("generated workload:", summary(expected))


# ------------------------------------------------------------------ (c)

def test_replay_is_deterministic(make_pipeline, engage_bin, tmp_path):
    events = gen(engage_bin, str(tmp_path / "gen.jsonl"), "--users", 1500, "--days", 40,
                 "--partitions", 4, "--seed", 11)
    expected = oracle.compute(oracle.read_jsonl(events))
    a = make_pipeline("first", extra_conf=FAST_REJOIN)
    a.produce(events)
    b = make_pipeline("second", input_topic=a.topics["input"], extra_conf=FAST_REJOIN)
    assert a.group != b.group and a.state_dir != b.state_dir
    a.run()
    b.run()
    for key in ("sessions", "daily", "dead_letters", "late"):
        ra, rb = a.read_raw(key), b.read_raw(key)
        ma, mb = harness.key_value_multiset(ra), harness.key_value_multiset(rb)
        only_a, only_b = ma - mb, mb - ma
        assert not only_a and not only_b, (
            f"{key}: runs differ: {sum(only_a.values())} (key, value) only in the first run, "
            f"{sum(only_b.values())} only in the second; e.g. first {list(only_a)[:2]} "
            f"second {list(only_b)[:2]}")
        want = len(expected[key])
        assert len(set(ma)) == want, f"{key}: {len(set(ma))} distinct records, oracle: {want}"
    raw_actual, _ = a.actual_from_raw()
    harness.assert_oracle(expected, raw_actual, "first run")


def wait_for_log(proc, log_path, mark, needle, count, limit_s):
    """Waits until `needle` appears `count` times in the log after byte
    `mark`, the process exits, or `limit_s` passes; returns which happened,
    for the test's log."""
    t0 = time.monotonic()
    while True:
        waited = time.monotonic() - t0
        with open(log_path, "rb") as f:
            f.seek(mark)
            if f.read().count(needle.encode()) >= count:
                return f"at '{needle}' x{count} after {waited:.2f}s"
        if proc.poll() is not None:
            return f"exited after {waited:.2f}s"
        if waited >= limit_s:
            return f"after {waited:.2f}s"
        time.sleep(0.005)


# ------------------------------------------------------------------ (d)

@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_crash_restart(make_pipeline, engage_bin, tmp_path, guarantee):
    events = gen(engage_bin, str(tmp_path / "gen.jsonl"), "--users", 3000, "--days", 40,
                 "--partitions", 4, "--seed", 23, "--max-events", 200000)
    expected = oracle.compute(oracle.read_jsonl(events))

    conf = dict(FAST_REJOIN, **{"processing.guarantee": guarantee})
    ref = make_pipeline("ref", extra_conf=conf)
    ref.produce(events)
    t_ref = ref.run()
    ref_actual, ref_raw = ref.actual_from_raw()
    harness.assert_oracle(expected, ref_actual, "uninterrupted run")

    crash = make_pipeline("crash", input_topic=ref.topics["input"], extra_conf=conf)
    rnd = random.Random(20260705)
    kills = rnd.randint(3, 5)
    hit = 0
    log = []
    for i in range(kills):
        mark = os.path.getsize(crash.log_path) if os.path.exists(crash.log_path) else 0
        proc = crash.start_run()
        # A random point in the run, but no later than the n-th of its 4
        # partitions reaching the end of its input (the run then still has
        # to commit and leave): a run with a warm broker can take a fraction
        # of the reference run's time, and kills timed from that alone all
        # came after the run had finished.
        delay = rnd.uniform(0.1, 0.7) * t_ref
        why = wait_for_log(proc, crash.log_path, mark, "input exhausted", rnd.randint(1, 4),
                           delay)
        rc = proc.poll()
        if rc is None:
            harness.kill(proc)
            hit += 1
            log.append(f"kill {i + 1}: SIGKILL {why}")
        else:
            assert rc == 0, (f"engage run exited {rc} before kill {i + 1}\n"
                             + harness.tail(crash.log_path))
            log.append(f"kill {i + 1}: run had already finished after {delay:.1f}s")
    proc = crash.start_run()
    try:
        rc = proc.wait(timeout=harness.RUN_TIMEOUT)
    except Exception:
        harness.kill(proc)
        raise AssertionError("final engage run did not finish in time\n"
                             + harness.tail(crash.log_path))
    assert rc == 0, f"final engage run exited {rc}\n" + harness.tail(crash.log_path)
    print(f"crash test: uninterrupted run {t_ref:.1f}s; " + "; ".join(log))
    assert hit >= 1, "no kill hit a running process: " + "; ".join(log)

    # A crash may re-emit records, but only byte-identical ones.
    raw = {k: crash.read_raw(k) for k in ("sessions", "daily", "dead_letters", "late")}
    by_session = collections.defaultdict(set)
    for r in raw["sessions"]:
        s = harness.decode_output("session", r.value)
        by_session[(s["user_id"], s["start_ms"])].add((r.key, r.value))
    bad = {k: v for k, v in by_session.items() if len(v) > 1}
    assert not bad, f"{len(bad)} sessions emitted with different bytes, e.g. {list(bad.items())[:2]}"
    by_date = collections.defaultdict(set)
    for r in raw["daily"]:
        by_date[harness.decode_output("daily", r.value)["date"]].add((r.key, r.value))
    bad = {k: v for k, v in by_date.items() if len(v) > 1}
    assert not bad, f"{len(bad)} days emitted with different bytes, e.g. {list(bad.items())[:2]}"
    for key in ("dead_letters", "late"):
        by_src = collections.defaultdict(set)
        for r in raw[key]:
            src = (r.headers.get("engage.source.partition"), r.headers.get("engage.source.offset"))
            by_src[src].add((r.key, r.value, r.headers.get("engage.reason")))
        bad = {k: v for k, v in by_src.items() if len(v) > 1}
        assert not bad, f"{key}: {len(bad)} source records emitted differently: " \
                        f"{list(bad.items())[:2]}"
    dups = {k: len(v) - len(harness.dedupe_identical(v)) for k, v in raw.items()}
    print(f"crash test ({guarantee}): identical re-emitted records per topic:", dups)
    if guarantee == "exactly_once":
        # transactions: a killed run's uncommitted output is aborted, so the
        # read_committed topics hold every record exactly once
        assert not any(dups.values()), f"duplicates under exactly_once: {dups}"

    deduped = {k: harness.dedupe_identical(v) for k, v in raw.items()}
    crash_actual = harness.raw_to_actual(deduped, crash.topics["input"])
    harness.assert_oracle(expected, crash_actual, "crashed and restarted run (deduplicated)")
    for key in deduped:
        a = set(harness.key_value_multiset(ref_raw[key]))
        b = set(harness.key_value_multiset(deduped[key]))
        assert a == b, (f"{key}: crashed run differs from the uninterrupted one: "
                        f"{len(a - b)} (key, value) only uninterrupted, {len(b - a)} only "
                        "crashed")
