"""Self-tests of the oracle: tiny cases whose expected numbers are written by
hand, one group per rule of the spec. Run: python3 -m pytest tests/oracle -q"""
import base64
import copy
import json
import os
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import edge_cases  # noqa: E402
import iqr_cases  # noqa: E402
import oracle  # noqa: E402

D = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
MIN = 60_000
GAP = 1_800_000
GRACE = 300_000

_n = [0]


def ev(uid, ts, p=0, eid=None, **kw):
    _n[0] += 1
    line = {"event_id": eid or f"t{_n[0]}", "user_id": uid, "timestamp": ts,
            "action": "view", "partition": p}
    line.update(kw)
    return line


def raw(value: bytes, uid="u", ts=D, p=0, **kw):
    line = {"user_id": uid, "timestamp": ts, "partition": p,
            "raw_value_b64": base64.b64encode(value).decode()}
    line.update(kw)
    return line


def datum(eid="e", uid="u", ts=D, action="a", platform=None, app_version=None):
    """Avro binary of a UserAction, encoded by hand (zigzag varints)."""
    def zz(n):
        n = (n << 1) ^ (n >> 63)
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])

    def s(x):
        b = x.encode()
        return zz(len(b)) + b

    def opt(x):
        return b"\x00" if x is None else b"\x02" + s(x)
    return s(eid) + s(uid) + zz(ts) + s(action) + opt(platform) + opt(app_version)


def frame(d, sid=1, magic=0):
    return bytes([magic]) + struct.pack(">i", sid) + d


def run(lines, **kw):
    return oracle.compute(lines, oracle.Params(**kw))


def sess(exp):
    return [(s["user_id"], s["start_ms"], s["end_ms"], s["duration_ms"], s["actions"], s["date"])
            for s in exp["sessions"]]


def daily(exp, *fields):
    return {d["date"]: tuple(d[f] for f in fields) for d in exp["daily"]}


# ------------------------------------------------------------------ sessions

def test_gap_exactly_30_minutes_continues():
    e = run([ev("a", D), ev("a", D + GAP)])
    assert sess(e) == [("a", D, D + GAP, GAP, 2, "2026-01-01")]


def test_gap_one_ms_over_splits():
    e = run([ev("a", D), ev("a", D + GAP + 1)])
    assert sess(e) == [("a", D, D, 0, 1, "2026-01-01"),
                       ("a", D + GAP + 1, D + GAP + 1, 0, 1, "2026-01-01")]


def test_sessions_are_per_user():
    e = run([ev("a", D), ev("b", D + 10 * MIN), ev("a", D + 20 * MIN)])
    assert sess(e) == [("a", D, D + 20 * MIN, 20 * MIN, 2, "2026-01-01"),
                       ("b", D + 10 * MIN, D + 10 * MIN, 0, 1, "2026-01-01")]


def test_session_crossing_midnight_belongs_to_start_day_user_active_both_days():
    t0 = D + DAY - 10 * MIN  # 2026-01-01 23:50
    e = run([ev("a", t0), ev("a", t0 + 20 * MIN)])
    assert sess(e) == [("a", t0, t0 + 20 * MIN, 20 * MIN, 2, "2026-01-01")]
    assert daily(e, "dau", "sessions") == {"2026-01-01": (1, 1), "2026-01-02": (1, 0)}


def test_out_of_order_within_grace_extends_start_backwards():
    e = run([ev("a", D + 10 * MIN), ev("a", D + 6 * MIN)])  # 4 min behind max: in grace
    assert sess(e) == [("a", D + 6 * MIN, D + 10 * MIN, 4 * MIN, 2, "2026-01-01")]


def test_out_of_order_event_bridges_two_sessions():
    # 0 and 33 min are two sessions alone; 30 min arriving last joins them
    e = run([ev("a", D), ev("a", D + 33 * MIN), ev("a", D + 30 * MIN)])
    assert sess(e) == [("a", D, D + 33 * MIN, 33 * MIN, 3, "2026-01-01")]


def test_same_timestamp_twice_with_distinct_ids_counts_two_actions():
    e = run([ev("a", D), ev("a", D)])
    assert sess(e) == [("a", D, D, 0, 2, "2026-01-01")]


# ------------------------------------------------------------------ lateness

def test_watermark_boundary():
    mx = D + 60 * MIN
    lines = [ev("a", mx),
             ev("a", mx - GRACE),       # == watermark: on time
             ev("b", mx - GRACE - 1)]   # 1 ms below: late
    assert oracle.outcomes(lines) == ["counted", "counted", "late"]
    e = run(lines)
    assert [(r["partition"], r["offset"]) for r in e["late"]] == [(0, 2)]
    assert sess(e) == [("a", mx - GRACE, mx, GRACE, 2, "2026-01-01")]
    assert daily(e, "dau") == {"2026-01-01": (1,)}  # b is nowhere


def test_watermark_is_per_partition():
    lines = [ev("a", D + 60 * MIN, p=0), ev("b", D, p=1), ev("c", D, p=0)]
    assert oracle.outcomes(lines) == ["counted", "counted", "late"]


def test_first_record_of_a_partition_is_never_late():
    lines = [ev("a", D + 60 * MIN, p=0), ev("b", D, p=3)]
    assert oracle.outcomes(lines) == ["counted", "counted"]


def test_late_record_and_dead_record_do_not_advance_watermark():
    lines = [ev("a", D + 60 * MIN),
             ev("a", D, eid="x"),                                   # late
             ev("a", D + 5 * 3_600_000, kafka_timestamp=D + 60 * MIN),  # dead: skew
             ev("a", D + 56 * MIN)]      # 4 min behind the real max: on time
    assert oracle.outcomes(lines) == ["counted", "late", "dead:timestamp_out_of_range",
                                      "counted"]


def test_grace_parameter():
    lines = [ev("a", D + 60 * MIN), ev("a", D + 50 * MIN)]
    assert oracle.outcomes(lines) == ["counted", "late"]
    assert oracle.outcomes(lines, oracle.Params(grace_ms=10 * MIN)) == ["counted", "counted"]


# ---------------------------------------------------------------- duplicates

def test_duplicate_ignored():
    a = ev("a", D, eid="dup")
    lines = [a, ev("a", D + MIN), dict(a)]
    assert oracle.outcomes(lines) == ["counted", "counted", "dup"]
    assert sess(run(lines)) == [("a", D, D + MIN, MIN, 2, "2026-01-01")]


def test_duplicate_with_other_timestamp_first_one_wins():
    lines = [ev("a", D, eid="x"), ev("a", D + 2 * MIN, eid="x")]
    assert oracle.outcomes(lines) == ["counted", "dup"]
    assert sess(run(lines)) == [("a", D, D, 0, 1, "2026-01-01")]


def test_late_duplicate_is_late_not_dup():
    a = ev("a", D, eid="x")
    lines = [a, ev("a", D + 60 * MIN), dict(a)]
    assert oracle.outcomes(lines) == ["counted", "counted", "late"]


def test_dead_event_does_not_mark_id_as_counted():
    lines = [ev("a", D, eid="x", key="b"), ev("a", D, eid="x")]
    assert oracle.outcomes(lines) == ["dead:key_mismatch", "counted"]


def test_late_event_does_not_mark_id_as_counted():
    lines = [ev("a", D + 60 * MIN), ev("a", D, eid="x"), ev("b", D + 59 * MIN, eid="x")]
    assert oracle.outcomes(lines) == ["counted", "late", "counted"]


# ---------------------------------------------------------------- validation

def test_framing():
    lines = [raw(b""), raw(b"\x00\x00\x00"), raw(b"\x00\x00\x00\x00"),
             raw(frame(datum(), magic=1))]
    assert oracle.outcomes(lines) == ["dead:bad_framing"] * 4


def test_unknown_schema_id():
    assert oracle.outcomes([raw(frame(datum(), sid=999))]) == ["dead:unknown_schema_id"]
    # id 2 is only known when configured
    p = oracle.Params(schemas={1: oracle.DEFAULT_SCHEMAS[1]})
    assert oracle.outcomes([raw(frame(datum(), sid=2))], p) == ["dead:unknown_schema_id"]


def test_undecodable():
    d = datum()
    lines = [raw(frame(d[:-1])), raw(frame(b"")), raw(frame(b"\xde\xad\xbe\xef")),
             raw(frame(d + b"\x00")), raw(frame(b"\x01" + d[1:])),
             raw(frame(d[:-1] + b"\x04"))]   # union branch 2 of ["null","string"]
    assert oracle.outcomes(lines) == ["dead:undecodable_avro"] * 6


def test_invalid_utf8_string_is_undecodable():
    d = b"\x02\xff" + datum()[2:]  # event_id "e" -> byte 0xff
    assert oracle.outcomes([raw(frame(d))]) == ["dead:undecodable_avro"]


def test_raw_valid_record_counts_schema_1_and_evolved_2():
    d1 = datum(eid="r1", uid="u", ts=D, platform="web", app_version="1.0")
    d2 = datum(eid="r2", uid="u", ts=D + MIN) + b"\x08hint"  # v2: + session_hint
    d2_short = datum(eid="r3", uid="u", ts=D + 2 * MIN)      # v2 datum lacks the field
    lines = [raw(frame(d1)), raw(frame(d2, sid=2)), raw(frame(d2_short, sid=2))]
    assert oracle.outcomes(lines) == ["counted", "counted", "dead:undecodable_avro"]
    assert sess(run(lines)) == [("u", D, D + MIN, MIN, 2, "2026-01-01")]


def test_decoded_fields_not_line_fields_count_for_raw_records():
    # the JSON line says user "zzz"/other time, the datum says "u" at D
    line = raw(frame(datum(eid="r", uid="u", ts=D)), uid="u", ts=D + 7 * DAY)
    e = run([line])
    assert sess(e) == [("u", D, D, 0, 1, "2026-01-01")]


def test_user_id_length_limit_in_bytes():
    u256 = "é" * 128
    u257 = "é" * 128 + "x"
    lines = [ev(u256, D), ev(u257, D), ev("", D)]
    assert oracle.outcomes(lines) == ["counted", "dead:bad_user_id", "dead:bad_user_id"]
    lines = [ev("a" * 256, D), ev("a" * 257, D), ev("ユーザー-ü-🙂", D)]
    assert oracle.outcomes(lines) == ["counted", "dead:bad_user_id", "counted"]


def test_key_mismatch_and_key_forms():
    lines = [ev("a", D, key="b"), ev("a", D, key="a"),
             ev("a", D, key_b64=base64.b64encode(b"a").decode()),
             ev("a", D, key="a", key_b64=base64.b64encode(b"x").decode()),  # b64 wins
             ev("ü", D, key_b64=base64.b64encode("ü".encode()).decode())]
    assert oracle.outcomes(lines) == ["dead:key_mismatch", "counted", "counted",
                                      "dead:key_mismatch", "counted"]


def test_timestamp_range():
    k = D
    lines = [ev("a", 1_262_303_999_999, kafka_timestamp=k),  # 1 ms before 2010
             ev("a", 1_262_304_000_000, kafka_timestamp=k),  # 2010-01-01 exactly: fine
             ev("b", k + 3_600_000, kafka_timestamp=k, p=1),  # +1 h: fine
             ev("b", k + 3_600_001, kafka_timestamp=k, p=2),  # +1 h 1 ms: dead
             ev("c", k + 7_200_000, kafka_timestamp=k, p=3)]  # +2 h: dead
    assert oracle.outcomes(lines) == ["dead:timestamp_out_of_range", "counted", "counted",
                                      "dead:timestamp_out_of_range",
                                      "dead:timestamp_out_of_range"]


def test_kafka_timestamp_defaults_to_timestamp():
    assert oracle.outcomes([ev("a", D + 10 * DAY)]) == ["counted"]


def test_validation_order():
    # framing before schema id: magic 1 with an unknown id
    assert oracle.outcomes([raw(frame(datum(), sid=999, magic=1))]) == ["dead:bad_framing"]
    # user id before key: empty user id with a mismatching key
    assert oracle.outcomes([ev("", D, key="x")]) == ["dead:bad_user_id"]
    # key before timestamp
    assert oracle.outcomes([ev("a", 5, key="x")]) == ["dead:key_mismatch"]
    # datum's user id is checked against the key (raw line without key -> its user_id)
    line = raw(frame(datum(uid="real")), uid="other")
    assert oracle.outcomes([line]) == ["dead:key_mismatch"]


def test_dead_letter_positions_and_original_bytes():
    v = frame(datum(eid="q", uid="u"), sid=7)
    lines = [ev("a", D, p=0), ev("b", D, p=1), raw(v, uid="u", p=1),
             ev("a", D + MIN, p=0, key="zz"), ev("b", D + 10 * DAY, p=1, eid="e9")]
    e = run(lines)
    assert [(d["partition"], d["offset"], d["reason"]) for d in e["dead_letters"]] == [
        (1, 1, "unknown_schema_id"), (0, 1, "key_mismatch")]
    assert base64.b64decode(e["dead_letters"][0]["value_b64"]) == v
    assert base64.b64decode(e["dead_letters"][0]["key_b64"]) == b"u"
    assert base64.b64decode(e["dead_letters"][1]["key_b64"]) == b"zz"
    # the value of a JSON line is its Avro encoding with schema 1, by hand:
    want = frame(datum(eid=lines[3]["event_id"], uid="a", ts=D + MIN, action="view"))
    assert base64.b64decode(e["dead_letters"][1]["value_b64"]) == want


def test_encode_value_by_hand():
    line = {"event_id": "e", "user_id": "u", "timestamp": 123, "action": "a"}
    b = oracle.encode_value(line, 1, oracle.DEFAULT_SCHEMAS[1])
    assert b == b"\x00\x00\x00\x00\x01" + b"\x02e\x02u\xf6\x01\x02a\x00\x00"
    line["platform"] = "ios"
    line["session_hint"] = "h"
    b = oracle.encode_value(line, 2, oracle.DEFAULT_SCHEMAS[2])
    assert b == b"\x00\x00\x00\x00\x02" + b"\x02e\x02u\xf6\x01\x02a\x02\x06ios\x00\x02h"


def test_late_positions():
    lines = [ev("a", D + DAY, p=2), ev("a", D, p=2), ev("b", D + DAY, p=3)]
    e = run(lines)
    assert [(r["partition"], r["offset"]) for r in e["late"]] == [(2, 1)]


def test_unrouted_line_uses_murmur2():
    lines = [ev("21", D), ev("foobar", D)]
    for ln in lines:
        del ln["partition"]
    items = oracle.classify(lines, oracle.Params(partitions=4))
    # toPositive(-973932308) % 4 and toPositive(-790332482) % 4
    assert [i["partition"] for i in items] == [(-973932308 & 0x7FFFFFFF) % 4,
                                               (-790332482 & 0x7FFFFFFF) % 4]


@pytest.mark.parametrize("key,want", [
    # vectors from Kafka's UtilsTest.testMurmur2
    (b"21", -973932308), (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107)])
def test_murmur2_vectors(key, want):
    assert oracle.murmur2(key) == want & 0xFFFFFFFF


# ------------------------------------------------------------- daily metrics

def test_daily_metrics_by_hand():
    # day 0: a (2 sessions: 0-10 min, 3 actions; 60 min single), b (one 0-ms session)
    # day 1: nobody
    # day 2: b (session of 2 actions, 5 min)
    lines = [ev("a", D), ev("a", D + 5 * MIN), ev("a", D + 10 * MIN), ev("a", D + 60 * MIN),
             ev("b", D + 61 * MIN, p=1),
             ev("b", D + 2 * DAY, p=1), ev("b", D + 2 * DAY + 5 * MIN, p=1)]
    e = run(lines)
    got = daily(e, "dau", "wau", "mau", "sessions", "session_users", "avg_duration_ms",
                "actions_per_session")
    assert got == {
        "2026-01-01": (2, 2, 2, 3, 2, (10 * MIN + 0 + 0) / 3, (3 + 1 + 1) / 3),
        "2026-01-02": (0, 2, 2, 0, 0, 0.0, 0.0),
        "2026-01-03": (1, 2, 2, 1, 1, float(5 * MIN), 2.0),
    }
    assert all(d[f] is None for d in e["daily"] for f in oracle.DAILY_IQR_FIELDS)


def test_window_edges_wau_mau():
    # a: day 0 only; b: day 36 only -> rows for days 0..36
    e = run([ev("a", D + 3_600_000), ev("b", D + 36 * DAY + 3_600_000, p=1)])
    d = {r["date"]: r for r in e["daily"]}
    assert len(d) == 37
    assert (d["2026-01-07"]["wau"], d["2026-01-08"]["wau"]) == (1, 0)  # day 6 in, 7 out
    assert (d["2026-01-30"]["mau"], d["2026-01-31"]["mau"]) == (1, 0)  # day 29 in, 30 out
    assert d["2026-01-15"]["dau"] == 0 and d["2026-01-15"]["mau"] == 1
    last = d["2026-02-06"]
    assert (last["dau"], last["wau"], last["mau"], last["sessions"]) == (1, 1, 1, 1)


def test_day_range_is_first_to_last_counted_event_day():
    # dead and late records on other days do not extend the range
    lines = [ev("a", D + 5 * DAY), ev("a", D + 9 * DAY, key="x"),
             ev("a", D + 2 * DAY)]  # late
    e = run(lines)
    assert [r["date"] for r in e["daily"]] == ["2026-01-06"]
    assert run([])["daily"] == []


def test_mau_counts_distinct_users():
    lines = [ev("a", D), ev("a", D + DAY), ev("b", D + DAY), ev("a", D + 2 * DAY)]
    assert daily(run(lines), "dau", "wau", "mau") == {
        "2026-01-01": (1, 1, 1), "2026-01-02": (2, 2, 2), "2026-01-03": (1, 2, 2)}


def test_duplicates_and_late_do_not_count_in_metrics():
    a = ev("a", D + DAY, eid="x")
    lines = [a, dict(a), ev("z", D, p=0)]  # z late (a day behind)
    e = run(lines)
    assert daily(e, "dau", "sessions") == {"2026-01-02": (1, 1)}
    assert sess(e) == [("a", D + DAY, D + DAY, 0, 1, "2026-01-02")]


# ------------------------------------------------------------------- compare

def _actual_from(exp):
    act = copy.deepcopy(exp)
    for i, s in enumerate(act["sessions"]):
        s["session_id"] = f"{i:016x}"
    return act


def _sample():
    lines = [ev("a", D), ev("a", D + MIN), ev("b", D + DAY, p=1), ev("b", D, p=1),
             ev("c", D + DAY, p=2, key="q")]
    return run(lines)


def test_compare_equal():
    exp = _sample()
    assert exp["late"] and exp["dead_letters"]
    assert oracle.compare(exp, _actual_from(exp)) == []


def test_compare_session_differences():
    exp = _sample()
    act = _actual_from(exp)
    act["sessions"][0]["actions"] += 1
    d = oracle.compare(exp, act)
    assert len(d) == 1 and "'a' start" in d[0] and "actions" in d[0]
    act = _actual_from(exp)
    act["sessions"].append(dict(act["sessions"][0], session_id="other"))
    assert any("emitted 2 times" in x for x in oracle.compare(exp, act))
    act = _actual_from(exp)
    act["sessions"][1]["session_id"] = act["sessions"][0]["session_id"]
    assert any("used 2 times" in x for x in oracle.compare(exp, act))
    act = _actual_from(exp)
    del act["sessions"][0]
    assert any(x.startswith("missing session") for x in oracle.compare(exp, act))


def test_compare_daily_differences():
    exp = _sample()
    act = _actual_from(exp)
    act["daily"][0]["avg_duration_ms"] *= (1 + 1e-12)
    assert oracle.compare(exp, act) == []
    act["daily"][0]["avg_duration_ms"] *= (1 + 1e-6)
    assert len(oracle.compare(exp, act)) == 1
    act = _actual_from(exp)
    act["daily"][0]["wau"] += 1
    assert oracle.compare(exp, act) == [f"daily {act['daily'][0]['date']} wau: expected "
                                        f"{exp['daily'][0]['wau']}, got "
                                        f"{exp['daily'][0]['wau'] + 1}"]
    act = _actual_from(exp)
    act["daily"].append(dict(act["daily"][0]))
    assert any("emitted 2 times" in x for x in oracle.compare(exp, act))
    act = _actual_from(exp)
    act["daily"].pop()
    assert any(x.startswith("missing daily") for x in oracle.compare(exp, act))
    act = _actual_from(exp)
    act["daily"][0]["duration_q1"] = 1.0
    assert len(oracle.compare(exp, act)) == 1
    assert oracle.compare(exp, act, check_iqr_null=False) == []


def test_compare_dead_and_late_differences():
    exp = _sample()
    act = _actual_from(exp)
    act["dead_letters"][0]["reason"] = "bad_framing"
    assert len(oracle.compare(exp, act)) == 1
    act = _actual_from(exp)
    act["dead_letters"][0]["value_b64"] = base64.b64encode(b"x").decode()
    assert len(oracle.compare(exp, act)) == 1
    act = _actual_from(exp)
    act["late"] = []
    assert oracle.compare(exp, act) == ["missing late record p1@1"]
    act = _actual_from(exp)
    act["late"].append(dict(act["late"][0], offset=9))
    assert oracle.compare(exp, act) == ["unexpected late record p1@9"]


def test_compare_null_key_equals_empty_key():
    exp = run([ev("", D)])
    assert exp["dead_letters"][0]["key_b64"] == ""
    act = _actual_from(exp)
    act["dead_letters"][0]["key_b64"] = None
    assert oracle.compare(exp, act) == []


def test_format_diffs_limits_to_20():
    text = oracle.format_diffs([f"d{i}" for i in range(30)])
    assert text.startswith("30 difference(s)") and "d19" in text and "d20" not in text


# ---------------------------------------------------------------- edge cases

@pytest.fixture(scope="module")
def edge_lines():
    return edge_cases.generate()


def test_edge_cases_outcomes_match_their_intent(edge_lines):
    got = oracle.outcomes(edge_lines)
    want = [ln.get("expect", "counted") for ln in edge_lines]
    bad = [(i, w, g) for i, (w, g) in enumerate(zip(want, got)) if w != g]
    assert not bad, bad[:20]
    reasons = {w.split(":", 1)[1] for w in want if w.startswith("dead:")}
    assert reasons == {"bad_framing", "unknown_schema_id", "undecodable_avro",
                       "bad_user_id", "key_mismatch", "timestamp_out_of_range"}
    assert "late" in want and "dup" in want


def test_edge_cases_shape(edge_lines):
    e = oracle.compute(edge_lines)
    assert e["users_on_multiple_partitions"] == []
    s = {(x["user_id"], x["start_ms"]): x for x in e["sessions"]}
    t = edge_cases.t
    assert s[("gap-exact", t(1, "03:00"))]["actions"] == 2
    assert s[("gap-exact", t(1, "03:00"))]["duration_ms"] == GAP
    assert s[("gap-exact", t(1, "04:00:00.001"))]["actions"] == 1
    assert s[("midnight", t(2, "23:50"))]["actions"] == 4
    assert s[("midnight", t(2, "23:50"))]["date"] == "2026-01-03"
    assert s[("long-session", t(6, "01:00"))]["actions"] == 61
    assert s[("long-session", t(6, "01:00"))]["duration_ms"] == 20 * 3_600_000
    assert s[("ooo-back", t(16, "00:58"))]["actions"] == 3
    assert s[("ooo-bridge", t(16, "02:00"))]["end_ms"] == t(16, "02:33")
    assert s[("ooo-bridge", t(16, "02:00"))]["actions"] == 3
    assert s[("late-user", t(16, "03:00"))]["actions"] == 3
    assert s[("dup-user", t(14, "02:00"))]["actions"] == 3
    assert s[("v2-user", t(19, "03:00"))]["actions"] == 3
    assert s[(edge_cases.USER_256, t(18, "04:00"))]["actions"] == 2
    assert len([k for k in s if k[0] == edge_cases.UNICODE_USER]) == 2
    assert "late-only" not in {x["user_id"] for x in e["sessions"]}
    d = {r["date"]: r for r in e["daily"]}
    assert len(d) == 40 and min(d) == "2026-01-01" and max(d) == "2026-02-09"
    for q in ("2026-01-21", "2026-01-22", "2026-01-23"):
        assert d[q]["dau"] == 0 and d[q]["sessions"] == 0 and d[q]["wau"] > 0
    # spans ~40 days and 4 partitions
    assert sorted(e["stats"]["partition_records"]) == ["0", "1", "2", "3"]


def test_edge_cases_deterministic(edge_lines):
    assert edge_cases.generate() == edge_lines


def test_cli(tmp_path):
    events = tmp_path / "edge.jsonl"
    out = tmp_path / "expected.json"
    subprocess.run([sys.executable, os.path.join(HERE, "edge_cases.py"), "--out", str(events)],
                   check=True)
    subprocess.run([sys.executable, os.path.join(HERE, "oracle.py"), str(events),
                    "--grace-ms", "300000", "--gap-ms", "1800000",
                    "--schema", "1=schemas/user_action.avsc",
                    "--schema", "2=tests/fixtures/user_action_v2.avsc",
                    "--out", str(out)], check=True, capture_output=True)
    exp = json.loads(out.read_text())
    assert exp == json.loads(json.dumps(oracle.compute(oracle.read_jsonl(str(events)))))
    # a different gap changes the sessions
    subprocess.run([sys.executable, os.path.join(HERE, "oracle.py"), str(events),
                    "--gap-ms", "60000", "--out", str(out)], check=True, capture_output=True)
    assert len(json.loads(out.read_text())["sessions"]) > len(exp["sessions"])


# ------------------------------------------------------- IQR (engage compact)

Q7 = oracle.quantile7


@pytest.mark.parametrize("xs,q1,q3", [
    ([7], 7, 7),                       # n = 1: h = 0
    ([10, 20], 12.5, 17.5),            # n = 2: h = 0.25, 0.75
    ([1, 2, 10], 1.5, 6),              # n = 3: h = 0.5, 1.5
    ([1, 2, 3, 4], 1.75, 3.25),        # n = 4: h = 0.75, 2.25
    ([1, 2, 3, 4, 5], 2, 4),           # n = 5: h = 1, 3 (no interpolation)
    ([0, 10, 20, 30, 40, 50], 12.5, 37.5),
    ([5, 5, 5, 7, 9], 5, 7),           # ties
    ([1, 4, 4, 4, 4, 4, 100], 4, 4),
])
def test_quantile7_by_hand(xs, q1, q3):
    assert Q7(xs, 0.25) == q1 and Q7(xs, 0.75) == q3
    assert Q7(xs, 0.0) == xs[0] and Q7(xs, 1.0) == xs[-1]


def test_quantile7_of_nothing():
    with pytest.raises(ValueError):
        Q7([], 0.5)


def test_quantile7_matches_numpy_percentile():
    np = pytest.importorskip("numpy")
    import random
    rnd = random.Random(7)
    for n in list(range(1, 40)) + [97, 100, 1001]:
        for _ in range(5):
            xs = sorted(rnd.choice((rnd.randrange(10), rnd.randrange(10**9)))
                        for _ in range(n))
            for p in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
                want = float(np.percentile(np.array(xs, dtype=np.float64), p * 100))
                assert Q7(xs, p) == pytest.approx(want, rel=1e-12, abs=1e-9), (xs, p)


def _sm(sessions, k=1.5):
    """sessions: (user, duration_ms, actions) of one day."""
    ss = [{"user_id": u, "duration_ms": d, "actions": a, "date": "2026-01-01"}
          for u, d, a in sessions]
    return oracle.day_session_metrics("2026-01-01", ss, k)


def test_session_metrics_one_session():
    r = _sm([("a", 1000, 3)])
    assert (r["duration_q1"], r["duration_q3"], r["duration_lower_fence"],
            r["duration_upper_fence"]) == (1000, 1000, 1000, 1000)
    assert (r["valid_sessions"], r["valid_users"], r["valid_avg_duration_ms"],
            r["valid_actions_per_session"]) == (1, 1, 1000, 3)


def test_session_metrics_no_sessions():
    r = _sm([])
    assert r["sessions"] == 0 and r["duration_q1"] is None and r["actions_upper_fence"] is None
    assert (r["valid_sessions"], r["valid_avg_duration_ms"], r["duration_outliers"]) == (0, 0, 0)
    assert r["iqr_multiplier"] == 1.5


def test_session_metrics_iqr_zero_only_equal_values_valid():
    ss = [(f"u{i % 8}", 300000, 2) for i in range(9)] + [("x", 300001, 2), ("y", 300000, 3)]
    r = _sm(ss)
    assert (r["duration_lower_fence"], r["duration_upper_fence"]) == (300000, 300000)
    assert (r["actions_lower_fence"], r["actions_upper_fence"]) == (2, 2)
    assert (r["valid_sessions"], r["valid_users"]) == (9, 8)
    assert (r["duration_outliers"], r["actions_outliers"]) == (1, 1)
    assert _sm(ss, k=1000)["valid_sessions"] == 9


def test_session_metrics_fences_are_inclusive():
    ss = [("a", 0, 1), ("b", 180000, 4), ("c", 180000, 4), ("d", 300000, 6), ("e", 480000, 9)]
    r = _sm(ss)
    assert (r["duration_lower_fence"], r["duration_upper_fence"]) == (0, 480000)
    assert (r["actions_lower_fence"], r["actions_upper_fence"]) == (1, 9)
    assert r["valid_sessions"] == 5 and r["valid_avg_duration_ms"] == 228000
    ss[-1] = ("e", 480001, 9)
    r = _sm(ss)
    assert (r["valid_sessions"], r["duration_outliers"], r["actions_outliers"]) == (4, 1, 0)


def test_session_metrics_skewed():
    ss = [("1", 100, 2), ("2", 200, 3), ("3", 300, 5000), ("4", 400, 3), ("5", 500, 4),
          ("1", 600, 5), ("6", 700, 6), ("7", 10**9, 4)]
    r = _sm(ss)
    assert (r["duration_q1"], r["duration_q3"]) == (275, 625)
    assert (r["duration_lower_fence"], r["duration_upper_fence"]) == (-250, 1150)
    assert (r["actions_q1"], r["actions_q3"]) == (3, 5.25)
    assert (r["actions_lower_fence"], r["actions_upper_fence"]) == (-0.375, 8.625)
    assert (r["valid_sessions"], r["valid_users"]) == (6, 5)
    assert r["valid_avg_duration_ms"] == 2500 / 6 and r["valid_actions_per_session"] == 23 / 6


def test_session_metrics_multiplier():
    ss = [(str(i), 1000 * i, 1) for i in range(1, 6)]
    assert _sm(ss, k=0)["valid_sessions"] == 3
    assert _sm(ss, k=0.5)["valid_sessions"] == 5
    assert _sm(ss, k=0.25)["valid_sessions"] == 3


def test_session_metrics_count_on_start_day_and_cover_every_day():
    t0 = D + DAY - 10 * MIN  # 23:50, across midnight
    e = run([ev("a", t0), ev("a", t0 + 20 * MIN), ev("b", D + 2 * DAY + HOUR_)])
    sm = {r["date"]: r for r in e["session_metrics"]}
    assert sorted(sm) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert sm["2026-01-01"]["sessions"] == 1 and sm["2026-01-01"]["duration_q1"] == 20 * MIN
    assert sm["2026-01-02"]["sessions"] == 0 and sm["2026-01-02"]["duration_q1"] is None
    assert sm["2026-01-03"]["valid_sessions"] == 1
    assert [r["date"] for r in e["session_metrics"]] == [r["date"] for r in e["daily"]]
    assert oracle.compute([ev("a", D)], oracle.Params(iqr_multiplier=3))[
        "session_metrics"][0]["iqr_multiplier"] == 3


HOUR_ = 3_600_000


def test_compare_session_metrics():
    exp = run([ev("a", D), ev("a", D + MIN), ev("b", D), ev("c", D + DAY)])
    act = _actual_from(exp)
    assert oracle.compare(exp, act) == []
    act["session_metrics"][0]["valid_avg_duration_ms"] *= 1 + 1e-12
    assert oracle.compare(exp, act) == []
    act["session_metrics"][0]["valid_avg_duration_ms"] *= 1 + 1e-6
    assert len(oracle.compare(exp, act)) == 1
    act = _actual_from(exp)
    act["session_metrics"][0]["valid_users"] += 1
    assert oracle.compare(exp, act) == ["session metrics 2026-01-01 valid_users: expected 2, "
                                        "got 3"]
    act = _actual_from(exp)
    act["session_metrics"][0]["duration_q1"] = None
    assert len(oracle.compare(exp, act)) == 1
    act = _actual_from(exp)
    act["session_metrics"].append(dict(act["session_metrics"][0]))
    assert any("emitted 2 times" in x for x in oracle.compare(exp, act))
    act = _actual_from(exp)
    act["session_metrics"].pop()
    assert oracle.compare(exp, act) == ["missing session metrics for 2026-01-02 (1 sessions)"]
    act = _actual_from(exp)
    del act["session_metrics"]  # not read: not compared
    assert oracle.compare(exp, act) == []
    act = _actual_from(exp)
    del act["session_metrics"][0]["iqr_multiplier"]
    assert len(oracle.compare(exp, act)) == 1


# ----------------------------------------------------------- IQR edge cases

@pytest.fixture(scope="module")
def iqr_expected():
    lines = iqr_cases.build()
    return lines, oracle.compute(lines)


def test_iqr_cases_shape(iqr_expected):
    lines, e = iqr_expected
    assert oracle.outcomes(lines) == ["counted"] * len(lines)
    assert e["users_on_multiple_partitions"] == []
    sm = {r["date"]: r for r in e["session_metrics"]}
    day = {k: oracle.day_to_date((iqr_cases.D0 // DAY) + k) for k in iqr_cases.DAY_NAMES}
    assert sorted(sm) == sorted(day.values())
    # 0 skewed: the three whales are out on both counts
    r = sm[day[0]]
    assert r["sessions"] == 43 and r["valid_sessions"] == 40
    assert (r["duration_outliers"], r["actions_outliers"]) == (3, 3)
    # 1 one session
    assert sm[day[1]]["sessions"] == 1 and sm[day[1]]["valid_sessions"] == 1
    # 2 all equal, 3 IQR = 0 with outliers
    assert (sm[day[2]]["sessions"], sm[day[2]]["valid_sessions"]) == (12, 12)
    assert sm[day[2]]["duration_q1"] == sm[day[2]]["duration_q3"] == 300000
    r = sm[day[3]]
    assert r["duration_q1"] == r["duration_q3"] == 300000 and r["actions_q1"] == r["actions_q3"]
    assert (r["sessions"], r["valid_sessions"], r["duration_outliers"],
            r["actions_outliers"]) == (12, 10, 1, 1)
    # 4 across midnight: the five late sessions count on day 4
    starts = {s["user_id"]: s for s in e["sessions"] if s["user_id"].startswith("mid-")
              and s["date"] == day[4]}
    assert len(starts) == 5 and all(s["end_ms"] // DAY == iqr_cases.D0 // DAY + 5
                                    for s in starts.values())
    assert sm[day[4]]["sessions"] == 8
    dd = {d["date"]: d for d in e["daily"]}
    assert dd[day[5]]["dau"] == 9  # the 4 day-5 users and the 5 midnight users
    # 6 on the fences: all valid; 7 past them
    r = sm[day[6]]
    assert (r["duration_lower_fence"], r["duration_upper_fence"],
            r["actions_lower_fence"], r["actions_upper_fence"]) == (0, 480000, 1, 9)
    assert r["valid_sessions"] == 5
    r = sm[day[7]]
    assert (r["valid_sessions"], r["duration_outliers"], r["actions_outliers"]) == (4, 1, 1)
    # 8 two, 9 none, 10 three by two users, 11 four with a huge one
    assert sm[day[8]]["sessions"] == 2
    assert sm[day[9]]["sessions"] == 0 and sm[day[9]]["duration_q1"] is None
    assert (sm[day[10]]["sessions"], sm[day[10]]["valid_users"]) == (3, 2)
    assert (sm[day[11]]["sessions"], sm[day[11]]["valid_sessions"]) == (4, 3)


def test_iqr_cases_deterministic(iqr_expected):
    assert iqr_cases.build() == iqr_expected[0]
