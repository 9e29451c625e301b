"""End-to-end tests of `engage compact` on a real Kafka broker: produce ->
engage run --until-end -> engage compact, with the session-metrics topic read
independently (confluent_kafka + fastavro) and through `engage dump`, and
compared with the oracle's IQR computation (tests/oracle/oracle.py).

    python3 -m pytest tests/e2e/test_compact.py -x -q
"""
import datetime
import io
import json
import os
import signal
import struct
import subprocess
import time
import uuid

import fastavro
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import harness
import iqr_cases
import oracle

pytestmark = pytest.mark.broker

FAST_REJOIN = {"kafka.session.timeout.ms": "6000"}
SM_SCHEMA_ID = 104  # output.schema.id.session_metrics default
_SCHEMA = []


def sm_schema():
    if not _SCHEMA:
        with open(os.path.join(harness.ROOT, "schemas", "session_metrics.avsc")) as f:
            _SCHEMA.append(fastavro.parse_schema(json.load(f), named_schemas={}))
    return _SCHEMA[0]


def decode_sm(value: bytes) -> dict:
    assert value is not None and len(value) >= 5 and value[0] == 0, value
    sid = struct.unpack(">i", value[1:5])[0]
    assert sid == SM_SCHEMA_ID, f"schema id {sid}"
    fo = io.BytesIO(value[5:])
    rec = fastavro.schemaless_reader(fo, sm_schema(), sm_schema())
    assert fo.tell() == len(value) - 5, "trailing bytes"
    return rec


def sm_topic(p, name="smetrics"):
    """A fresh session-metrics topic name, registered with the pipeline so
    its fixture deletes it afterwards (the compactor creates it)."""
    t = f"{p.topics['input']}-{name}"
    p.topics[name] = t
    return t


def make(make_pipeline, name, **conf):
    extra = dict(FAST_REJOIN)
    extra["topic.session_metrics"] = f"e2e-compact-{name}-{uuid.uuid4().hex[:10]}-smetrics"
    extra.update(conf)
    p = make_pipeline(name, extra_conf=extra)
    p.topics["session_metrics"] = extra["topic.session_metrics"]
    return p


def compact(p, *args, timeout=harness.RUN_TIMEOUT):
    """engage compact -c <pipeline conf> ARGS; fails the test on non-zero exit."""
    return harness.run_cmd([p.bin, "compact", "-c", p.conf_path, *args], p.log_path,
                           timeout=timeout)


def compact_status(p, *args):
    """engage compact ARGS; returns (exit code, stderr)."""
    r = subprocess.run([p.bin, "compact", "-c", p.conf_path, *args], cwd=harness.ROOT,
                       capture_output=True, text=True, timeout=harness.RUN_TIMEOUT)
    with open(p.log_path, "a") as log:
        log.write(f"\n$ engage compact {' '.join(args)} -> {r.returncode}\n{r.stderr}")
    return r.returncode, r.stderr


def read_sm(p, key="session_metrics"):
    return harness.read_topic(p.bootstrap, p.topics[key])


def check_sm(expected: list, recs) -> list:
    """Keys are the dates, values decode, and they match the oracle."""
    actual = []
    for r in recs:
        v = decode_sm(r.value)
        assert r.key == v["date"].encode(), (r.key, v["date"])
        actual.append(v)
    diffs = oracle.compare_session_metrics(expected, actual)
    assert not diffs, oracle.format_diffs(diffs)
    return actual


def pipeline_with(make_pipeline, tmp_path, name, events, **conf):
    p = make(make_pipeline, name, **conf)
    p.produce(events)
    p.run()
    return p


# ------------------------------------------------------------------------

def test_iqr_cases_and_identical_rerun(make_pipeline, tmp_path):
    events = str(tmp_path / "iqr.jsonl")
    iqr_cases.write(events)
    expected = oracle.compute(oracle.read_jsonl(events))
    days = [r["date"] for r in expected["session_metrics"]]
    p = pipeline_with(make_pipeline, tmp_path, "iqr", events)

    compact(p, "--until-end")
    first = read_sm(p)
    assert [r.partition for r in first] == [0] * len(first)  # created with 1 partition
    assert [r.key.decode() for r in first] == days           # every day, in date order
    check_sm(expected["session_metrics"], first)
    # the same through engage dump
    dumped = [r["value"] for r in p.dump("session_metrics")]
    diffs = oracle.compare_session_metrics(expected["session_metrics"], dumped)
    assert not diffs, oracle.format_diffs(diffs)

    # twice into the same topic: the second run's records are byte-identical
    compact(p, "--until-end")
    both = read_sm(p)
    assert len(both) == 2 * len(first)
    assert [(r.key, r.value) for r in both[len(first):]] == [(r.key, r.value) for r in first]


def test_generated_workload_multiplier_and_range(make_pipeline, engage_bin, tmp_path):
    events = str(tmp_path / "gen.jsonl")
    harness.run_cmd([engage_bin, "gen", "--users", 2000, "--days", 33, "--partitions", 4,
                     "--seed", 11, "-o", events], str(tmp_path / "gen.log"))
    params = oracle.Params(iqr_multiplier=2.0)
    expected = oracle.compute(oracle.read_jsonl(events), params)
    assert expected["users_on_multiple_partitions"] == []
    p = pipeline_with(make_pipeline, tmp_path, "gen", events, **{"compact.iqr.multiplier": "2"})

    compact(p, "--until-end")
    full = read_sm(p)
    actual = check_sm(expected["session_metrics"], full)
    assert sum(r["duration_outliers"] for r in actual) > 0
    assert all(r["iqr_multiplier"] == 2.0 for r in actual)

    # a date range into another topic: only those days, the same bytes
    days = [r["date"] for r in expected["session_metrics"]]
    lo, hi = days[3], days[9]
    rng = sm_topic(p, "range")
    compact(p, "-X", f"topic.session_metrics={rng}", "--from", lo, "--to", hi)
    part = read_sm(p, "range")
    assert [r.key.decode() for r in part] == days[3:10]
    by_key = {r.key: r.value for r in full}
    assert all(by_key[r.key] == r.value for r in part)


def test_incomplete_days_exit_1(make_pipeline, tmp_path):
    events = str(tmp_path / "iqr.jsonl")
    iqr_cases.write(events)
    expected = oracle.compute(oracle.read_jsonl(events))
    last = expected["session_metrics"][-1]["date"]
    p = pipeline_with(make_pipeline, tmp_path, "incomplete", events)
    # the last day exists, the next one does not: exit 1, the last day is out
    nxt = (datetime.date.fromisoformat(last) + datetime.timedelta(days=1)).isoformat()
    code, err = compact_status(p, "--from", last, "--to", nxt)
    assert code == 1, err
    assert "incomplete" in err and nxt in err
    recs = read_sm(p)
    assert [r.key.decode() for r in recs] == [last]
    check_sm([expected["session_metrics"][-1]], recs)
    # a daily-metrics topic without records: every day with sessions is incomplete
    empty = sm_topic(p, "no-daily")
    admin = AdminClient({"bootstrap.servers": p.bootstrap})  # must outlive the future
    admin.create_topics([NewTopic(empty, num_partitions=1, replication_factor=1)],
                        operation_timeout=30)[empty].result(timeout=60)
    harness.wait_topics(admin, [empty])
    code, err = compact_status(p, "-X", f"topic.daily={empty}", "--until-end")
    assert code == 1 and "no DailyMetrics record" in err, err
    assert len(read_sm(p)) == 1  # nothing complete, nothing new
    # bad arguments
    assert compact_status(p, "--from", "2026-02-30")[0] == 2
    assert compact_status(p, "--from", "2026-03-02", "--to", "2026-03-01")[0] == 2


def test_continuous_follows_and_skips_emitted_days(make_pipeline, tmp_path):
    events = str(tmp_path / "iqr.jsonl")
    iqr_cases.write(events)
    expected = oracle.compute(oracle.read_jsonl(events))
    n = len(expected["session_metrics"])
    p = make(make_pipeline, "cont")
    p.produce(events)

    def start():
        log = open(p.log_path, "ab")
        log.write(b"\n$ engage compact (continuous, background)\n")
        log.flush()
        proc = subprocess.Popen([p.bin, "compact", "-c", p.conf_path], cwd=harness.ROOT,
                                stdout=log, stderr=log)
        log.close()
        return proc

    def wait_records(want, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            try:
                recs = read_sm(p)
            except AssertionError:  # not created yet
                recs = []
            if len(recs) >= want or time.monotonic() > deadline:
                return recs
            time.sleep(1)

    # started before the processor: it emits each day as it completes
    c = start()
    try:
        p.run()
        recs = wait_records(n)
    finally:
        c.send_signal(signal.SIGTERM)
        code = c.wait(timeout=60)
    assert code == 0, harness.tail(p.log_path)
    assert len(recs) == n, f"{len(recs)} of {n} days emitted\n" + harness.tail(p.log_path)
    check_sm(expected["session_metrics"], recs)

    # restarted: every day is known, nothing is emitted again
    c = start()
    time.sleep(8)
    c.send_signal(signal.SIGTERM)
    assert c.wait(timeout=60) == 0, harness.tail(p.log_path)
    assert len(read_sm(p)) == n
    # a bounded run afterwards re-emits the same bytes
    compact(p, "--until-end")
    again = read_sm(p)
    assert sorted((r.key, r.value) for r in again[n:]) == sorted((r.key, r.value) for r in recs)
