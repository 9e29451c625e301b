#!/usr/bin/env python3
"""Hand-built edge cases for engage, as a docs/JSONL.md event file.

    python3 tests/oracle/edge_cases.py --out edge.jsonl

Four input partitions; every user id sits on one fixed partition. The
events span 2026-01-01 .. 2026-02-09 (40 UTC days) with 2026-01-21 ..
2026-01-23 completely silent. A background population (seeded, fixed) is
active between 06:00 and 18:00 UTC; the hand-built scenarios live at night
(00:00-05:00, 21:00-24:00) so that each partition's maximum timestamp at the
time a scenario record arrives is exactly what the scenario intends.

Lines are ordered by an "arrival" time: normally the event time (background
events up to 2 minutes after it, always within grace), later for
out-of-order, duplicate and late records. Within a partition that order is
the processing order; records of different partitions are interleaved by it.

Lines carry `expect` ("dup", "late", "dead:<reason>") for humans and for the
oracle self-test, which checks that the oracle derives exactly these
outcomes. The oracle itself never reads `expect`.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import struct
import sys

import fastavro

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import oracle  # noqa: E402  (only for the Avro schema helpers)

D0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
MIN = 60_000
HOUR = 3_600_000
NDAYS = 40
QUIET_DAYS = (20, 21, 22)
PARTITIONS = 4

UNICODE_USER = "ユーザー-ü-🙂"
# 256 bytes of UTF-8 (2-byte é) - the longest valid user id
USER_256 = "long-" + "é" * 125 + "x"
USER_257 = USER_256 + "y"
assert len(USER_256.encode()) == 256 and len(USER_257.encode()) == 257

USER_PART = {
    # partition 0: gaps, midnight, long and single-action sessions
    "gap-exact": 0, "midnight": 0, "long-session": 0, "single": 0,
    # partition 1: window edges, duplicates, raw valid records
    "mau-edge": 1, "wau-edge": 1, "first-last": 1, "dup-user": 1, "dup-late": 1,
    "raw-ok": 1,
    # partition 2: out of order, late
    "ooo-back": 2, "ooo-bridge": 2, "late-user": 2, "late-only": 2, "km-user": 2,
    # partition 3: user ids, schema evolution, timestamp ranges
    UNICODE_USER: 3, USER_256: 3, USER_257: 3, "v2-user": 3, "skew-edge": 3,
    "future-user": 3, "old-user": 3,
}
BG_USERS = [f"bg-{i:02d}" for i in range(40)]
for _i, _u in enumerate(BG_USERS):
    USER_PART[_u] = _i % PARTITIONS


def t(day: int, hms: str) -> int:
    """ms timestamp of day (0 = 2026-01-01) at "HH:MM[:SS[.mmm]]" UTC."""
    parts = hms.split(":")
    h, m = int(parts[0]), int(parts[1])
    s = float(parts[2]) if len(parts) > 2 else 0.0
    return D0 + day * DAY + h * HOUR + m * MIN + int(round(s * 1000))


def _schema_path(sid):
    return {1: os.path.join(ROOT, "schemas", "user_action.avsc"),
            2: os.path.join(ROOT, "tests", "fixtures", "user_action_v2.avsc")}[sid]


def avro_datum(rec: dict, sid: int = 1) -> bytes:
    path = _schema_path(sid)
    with open(path) as f:
        fields = json.load(f)["fields"]
    full = {fd["name"]: rec.get(fd["name"], fd.get("default")) for fd in fields}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, oracle.load_schema(path), full)
    return buf.getvalue()


def framed(datum: bytes, sid: int = 1, magic: int = 0) -> bytes:
    return bytes([magic]) + struct.pack(">i", sid) + datum


class Builder:
    def __init__(self):
        self.entries = []  # (arrival, seq, line)
        self.seq = 0
        self.next_eid = 0

    def _push(self, arrival, line):
        self.entries.append((arrival, self.seq, line))
        self.seq += 1
        return line

    def eid(self, tag="e"):
        self.next_eid += 1
        return f"{tag}-{self.next_eid:05d}"

    def ev(self, user, ts, action="view", arrival=None, expect=None, **extra):
        line = {"event_id": self.eid(), "user_id": user, "timestamp": ts, "action": action,
                "platform": "ios" if len(user) % 2 else "android", "app_version": "3.1.4",
                "partition": USER_PART[user]}
        line.update(extra)
        if expect:
            line["expect"] = expect
        return self._push(ts if arrival is None else arrival, line)

    def resend(self, line, arrival, expect):
        dup = dict(line)
        dup.pop("expect", None)
        dup["expect"] = expect
        return self._push(arrival, dup)

    def raw(self, partition, user, value: bytes, ts, expect=None, arrival=None, **extra):
        line = {"user_id": user, "timestamp": ts, "partition": partition,
                "raw_value_b64": base64.b64encode(value).decode("ascii")}
        line.update(extra)
        if expect:
            line["expect"] = expect
        return self._push(ts if arrival is None else arrival, line)

    def lines(self):
        return [ln for _, _, ln in sorted(self.entries, key=lambda e: (e[0], e[1]))]


def background(b: Builder, seed: int = 2026):
    rnd = random.Random(seed)
    actions = ["view", "click", "scroll", "search", "purchase", "share"]
    for u in BG_USERS:
        p_active = rnd.uniform(0.15, 0.85)
        for day in range(NDAYS):
            if day in QUIET_DAYS or rnd.random() > p_active:
                continue
            for _ in range(rnd.choice((1, 1, 2))):
                ts = t(day, "06:00") + rnd.randrange(9 * HOUR)  # 06:00 .. 15:00
                for _ in range(rnd.randint(1, 10)):
                    b.ev(u, ts, rnd.choice(actions), arrival=ts + rnd.randrange(120_000))
                    ts += rnd.randint(1_000, 20 * MIN)


def scenarios(b: Builder):
    # ---------------- partition 0
    # gap of exactly 30:00.000 continues, 30:00.001 splits
    b.ev("gap-exact", t(1, "03:00:00.000"))
    b.ev("gap-exact", t(1, "03:30:00.000"))        # +1800000: same session
    b.ev("gap-exact", t(1, "04:00:00.001"))        # +1800001: new single-action session
    # a session crossing midnight belongs to its start day; active both days
    b.ev("midnight", t(2, "23:50"))
    b.ev("midnight", t(2, "23:59:59.999"))
    b.ev("midnight", t(3, "00:00:00.000"))
    b.ev("midnight", t(3, "00:10"))
    # 20 hours, an action every 20 minutes: 61 actions, 72 000 000 ms
    for k in range(61):
        b.ev("long-session", t(6, "01:00") + k * 20 * MIN, "read")
    # single-action sessions
    b.ev("single", t(7, "04:00"))
    b.ev("single", t(9, "04:00"))
    # malformed framing
    b.raw(0, "single", b"", t(8, "02:00"), expect="dead:bad_framing")
    b.raw(0, "single", b"\x00\x00\x00", t(8, "02:01"), expect="dead:bad_framing")
    good = avro_datum({"event_id": "never-counted-1", "user_id": "single",
                       "timestamp": t(8, "02:02"), "action": "view"})
    b.raw(0, "single", framed(good, magic=1), t(8, "02:02"), expect="dead:bad_framing")

    # ---------------- partition 1
    b.ev("first-last", t(0, "02:00"))                # the first day
    b.ev("first-last", t(NDAYS - 1, "02:00"))        # the last day
    b.ev("mau-edge", t(3, "03:00"))    # in MAU of days 3..32, not of day 33
    b.ev("wau-edge", t(12, "04:00"))   # in WAU of days 12..18, not of day 19
    # duplicates: same event re-sent a few records later, within the session
    d1 = b.ev("dup-user", t(14, "02:00"))
    b.ev("dup-user", t(14, "02:05"))
    b.resend(d1, t(14, "02:05:30"), "dup")
    d3 = b.ev("dup-user", t(14, "02:10"))
    b.resend(d3, t(14, "02:10:01"), "dup")
    b.resend(d3, t(14, "02:10:02"), "dup")
    # a re-sent event that is by now below the watermark is late, not a dup
    d4 = b.ev("dup-late", t(14, "02:30"))
    b.ev("dup-late", t(14, "02:50"))
    b.ev("dup-late", t(14, "03:00"))
    b.resend(d4, t(14, "03:00:10"), "late")
    # raw values that are valid (schema 1, and evolved schema 2) count
    rec = {"event_id": "raw-ok-1", "user_id": "raw-ok", "timestamp": t(15, "03:00"),
           "action": "open", "platform": None, "app_version": "9"}
    b.raw(1, "raw-ok", framed(avro_datum(rec)), rec["timestamp"])
    rec2 = dict(rec, event_id="raw-ok-2", timestamp=t(15, "03:07"), session_hint="h1")
    b.raw(1, "raw-ok", framed(avro_datum(rec2, 2), 2), rec2["timestamp"])
    # unknown schema id and undecodable data
    rec3 = dict(rec, event_id="raw-bad", timestamp=t(15, "03:20"))
    datum = avro_datum(rec3)
    b.raw(1, "raw-ok", framed(datum, sid=999), t(15, "03:20"),
          expect="dead:unknown_schema_id")
    b.raw(1, "raw-ok", framed(datum[:-3]), t(15, "03:21"), expect="dead:undecodable_avro")
    b.raw(1, "raw-ok", framed(b"\xde\xad\xbe\xef"), t(15, "03:22"),
          expect="dead:undecodable_avro")
    b.raw(1, "raw-ok", framed(datum + b"\x00"), t(15, "03:23"),
          expect="dead:undecodable_avro")          # bytes left over
    b.raw(1, "raw-ok", framed(b""), t(15, "03:24"),
          expect="dead:undecodable_avro")          # header only
    bad_union = (avro_datum({"event_id": "x", "user_id": "raw-ok",
                             "timestamp": t(15, "03:25"), "action": "a"})[:-2] + b"\x04")
    b.raw(1, "raw-ok", framed(bad_union), t(15, "03:25"),
          expect="dead:undecodable_avro")          # union branch 2 of 2
    bad_len = b"\x01" + datum[1:]                  # event_id length -1
    b.raw(1, "raw-ok", framed(bad_len), t(15, "03:26"), expect="dead:undecodable_avro")

    # ---------------- partition 2
    # an out-of-order event that moves a session's start backwards
    b.ev("ooo-back", t(16, "01:00"))
    b.ev("ooo-back", t(16, "00:58"), arrival=t(16, "01:00:30"))
    b.ev("ooo-back", t(16, "01:10"))
    # one that bridges two sessions (02:00 and 02:33 are 33 min apart)
    b.ev("ooo-bridge", t(16, "02:00"))
    b.ev("ooo-bridge", t(16, "02:33"))
    b.ev("ooo-bridge", t(16, "02:30"), arrival=t(16, "02:33:30"))
    # lateness: partition max becomes 03:20, watermark 03:15:00.000
    b.ev("late-user", t(16, "03:00"))
    b.ev("late-user", t(16, "03:20"))
    b.ev("late-user", t(16, "03:14:59.999"), arrival=t(16, "03:20:01"), expect="late")
    b.ev("late-user", t(16, "03:15:00.000"), arrival=t(16, "03:20:02"))  # == watermark
    b.ev("late-only", t(16, "02:40"), arrival=t(16, "03:20:03"), expect="late")
    b.ev("late-user", t(15, "23:00"), arrival=t(16, "03:20:04"), expect="late")
    # dead: empty user id, key mismatches
    b.ev("late-user", t(17, "02:00"))
    line = b.ev("late-user", t(17, "02:01"), expect="dead:bad_user_id")
    line["user_id"] = ""
    b.ev("km-user", t(17, "02:02"), key="someone-else", expect="dead:key_mismatch")
    b.ev("km-user", t(17, "02:03"), key_b64=base64.b64encode(b"\xff\xfe").decode(),
         expect="dead:key_mismatch")
    b.ev("km-user", t(17, "02:04"), key="km-user")  # explicit, equal key: fine

    # ---------------- partition 3
    b.ev(UNICODE_USER, t(18, "03:00"))
    b.ev(UNICODE_USER, t(18, "03:10"))
    b.ev(UNICODE_USER, t(18, "03:45"))            # 35 min later: second session
    b.ev(USER_256, t(18, "04:00"))
    b.ev(USER_256, t(18, "04:05"))
    b.ev(USER_257, t(18, "04:06"), expect="dead:bad_user_id")
    # evolved writer schema 2 (adds session_hint with a default)
    b.ev("v2-user", t(19, "03:00"), schema_id=2, session_hint="resume")
    b.ev("v2-user", t(19, "03:05"))
    b.ev("v2-user", t(19, "03:06"), schema_id=2)  # session_hint takes its default
    # timestamp range: 2009 (mid-year, and 1 ms before 2010-01-01), and event
    # time 2 h ahead of the Kafka timestamp
    b.ev("old-user", 1_245_067_200_000, arrival=t(19, "04:00"),
         kafka_timestamp=t(19, "04:00"), expect="dead:timestamp_out_of_range")
    b.ev("old-user", 1_262_303_999_999, arrival=t(19, "04:00:01"),
         kafka_timestamp=t(19, "04:00"), expect="dead:timestamp_out_of_range")
    b.ev("future-user", t(19, "06:10"), arrival=t(19, "04:10"),
         kafka_timestamp=t(19, "04:10"), expect="dead:timestamp_out_of_range")
    # ...which must not advance the watermark: these are on time
    b.ev("skew-edge", t(19, "04:15"))
    b.ev("skew-edge", t(19, "04:20"), kafka_timestamp=t(19, "03:20"))  # skew exactly 1 h
    b.ev("skew-edge", t(19, "04:21"), kafka_timestamp=t(19, "03:20:59.999"),
         expect="dead:timestamp_out_of_range")                         # 1 h + 1 ms

    # a re-send of a counted event long after: late (not counted twice)
    b.resend(d1, t(30, "03:00"), "late")


def generate(seed: int = 2026):
    b = Builder()
    background(b, seed)
    scenarios(b)
    lines = b.lines()
    # sanity: one partition per user id, quiet days silent
    for ln in lines:
        uid = ln.get("user_id")
        if uid in USER_PART:
            assert ln["partition"] == USER_PART[uid], ln
        ts = ln.get("timestamp")
        if ts and ts >= D0:
            assert (ts - D0) // DAY not in QUIET_DAYS, ln
    return lines


def write(path: str, seed: int = 2026) -> int:
    lines = generate(seed)
    with open(path, "w", encoding="utf-8") as f:
        for ln in lines:
            f.write(json.dumps(ln, ensure_ascii=False, separators=(",", ":")) + "\n")
    return len(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="write the engage edge-case event file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=2026, help="background population seed")
    a = ap.parse_args(argv)
    n = write(a.out, a.seed)
    print(f"{a.out}: {n} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
