#!/usr/bin/env python3
"""Independent batch oracle for engage.

Reads an event file in the docs/JSONL.md format (as given to `engage produce`)
and computes, as one plain batch computation, what the stream processor must
output: closed sessions, daily metrics, dead letters and late records, plus what `engage compact` must emit per day (session
metrics with IQR outlier fences). It does not share code or structure with
the C implementation on purpose.

Library use:
    import oracle
    exp = oracle.compute(oracle.read_jsonl(path), oracle.Params())
    diffs = oracle.compare(exp, actual)        # [] when equal

CLI:
    python3 tests/oracle/oracle.py EVENTS.jsonl [--grace-ms N] [--gap-ms N]
        [--max-skew-ms N] [--schema ID=path ...] [--partitions N] --out expected.json

The `actual` structure compare() expects (the e2e harness builds it from the
output topics) has the same shape as compute()'s result:
    {"sessions":     [{"session_id", "user_id", "start_ms", "end_ms",
                       "duration_ms", "actions", "date"}, ...],
     "daily":        [{"date", "dau", "wau", "mau", "sessions", "session_users",
                       "avg_duration_ms", "actions_per_session", <IQR fields>}, ...],
     "dead_letters": [{"partition", "offset", "reason", "key_b64", "value_b64"}, ...],
     "late":         [{"partition", "offset", "key_b64", "value_b64"}, ...],
     "session_metrics": [{"date", "sessions", <SESSION_METRICS_FIELDS>}, ...]}
key_b64 is None for a null key (compared equal to an empty key).
"session_metrics" is optional in `actual`: it is compared only when present
(compare_session_metrics() compares just those records).
"""
from __future__ import annotations

import argparse
import base64
import collections
import datetime as _dt
import io
import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import fastavro

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

DAY_MS = 86_400_000
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1

# The same writer schemas the e2e tests configure (input.schemas).
DEFAULT_SCHEMAS = {
    1: os.path.join(ROOT, "schemas", "user_action.avsc"),
    2: os.path.join(ROOT, "tests", "fixtures", "user_action_v2.avsc"),
}
READER_SCHEMA = os.path.join(ROOT, "schemas", "user_action.avsc")

DAILY_COUNT_FIELDS = ("dau", "wau", "mau", "sessions", "session_users")
DAILY_DOUBLE_FIELDS = ("avg_duration_ms", "actions_per_session")
DAILY_IQR_FIELDS = (
    "duration_q1", "duration_q3", "actions_q1", "actions_q3",
    "duration_lower_fence", "duration_upper_fence",
    "actions_lower_fence", "actions_upper_fence",
    "valid_sessions", "valid_users", "valid_avg_duration_ms",
    "valid_actions_per_session", "duration_outliers", "actions_outliers",
)
SESSION_FIELDS = ("user_id", "start_ms", "end_ms", "duration_ms", "actions", "date")
# SessionMetrics (schemas/session_metrics.avsc), after "date" and "sessions"
SESSION_METRICS_DOUBLES = (
    "duration_q1", "duration_q3", "actions_q1", "actions_q3",
    "duration_lower_fence", "duration_upper_fence",
    "actions_lower_fence", "actions_upper_fence",
    "valid_avg_duration_ms", "valid_actions_per_session", "iqr_multiplier",
)
SESSION_METRICS_COUNTS = ("sessions", "valid_sessions", "valid_users",
                          "duration_outliers", "actions_outliers")
SESSION_METRICS_FIELDS = (
    "sessions", "duration_q1", "duration_q3", "actions_q1", "actions_q3",
    "duration_lower_fence", "duration_upper_fence",
    "actions_lower_fence", "actions_upper_fence",
    "valid_sessions", "valid_users", "valid_avg_duration_ms",
    "valid_actions_per_session", "duration_outliers", "actions_outliers",
    "iqr_multiplier",
)


@dataclass
class Params:
    grace_ms: int = 300_000
    gap_ms: int = 1_800_000
    max_skew_ms: int = 3_600_000
    min_ts_ms: int = 1_262_304_000_000  # 2010-01-01T00:00:00Z
    max_user_id_bytes: int = 256
    partitions: int = 4  # only used for lines without "partition"
    iqr_multiplier: float = 1.5  # compact.iqr.multiplier
    schemas: Dict[int, str] = field(default_factory=lambda: dict(DEFAULT_SCHEMAS))


# --------------------------------------------------------------------------
# Avro helpers

def _strip_logical(x):
    """Drops logicalType annotations: the binary encoding is unchanged and we
    want plain ints for timestamps, not datetimes."""
    if isinstance(x, dict):
        return {k: _strip_logical(v) for k, v in x.items() if k != "logicalType"}
    if isinstance(x, list):
        return [_strip_logical(v) for v in x]
    return x


def load_schema(path: str):
    with open(path, "rb") as f:
        return fastavro.parse_schema(_strip_logical(json.load(f)), named_schemas={})


_schema_cache: Dict[str, Any] = {}


def _schema(path: str):
    p = os.path.abspath(path)
    if p not in _schema_cache:
        _schema_cache[p] = load_schema(p)
    return _schema_cache[p]


class _StrictBytes(io.BytesIO):
    """A reader that refuses negative lengths and short reads (fastavro would
    otherwise read 'the rest' for a negative length)."""

    def read(self, n=-1):
        if n is None or n < 0:
            raise ValueError("negative length in Avro datum")
        data = super().read(n)
        if len(data) != n:
            raise EOFError("Avro datum truncated")
        return data


def decode_user_action(datum: bytes, writer_path: str) -> dict:
    """Decodes a schemaless datum written with writer_path into the reader
    schema (schemas/user_action.avsc). Raises ValueError if it does not
    decode completely."""
    fo = _StrictBytes(datum)
    try:
        rec = fastavro.schemaless_reader(fo, _schema(writer_path), _schema(READER_SCHEMA))
    except Exception as e:  # any decoder failure is "undecodable"
        raise ValueError(f"{type(e).__name__}: {e}") from None
    if fo.tell() != len(datum):
        raise ValueError(f"{len(datum) - fo.tell()} bytes left over after the datum")
    ts = rec.get("timestamp")
    if not isinstance(ts, int) or not (INT64_MIN <= ts <= INT64_MAX):
        raise ValueError("timestamp is not a 64-bit long")
    return rec


def encode_value(line: dict, schema_id: int, writer_path: str) -> bytes:
    """Confluent-framed Avro encoding of a JSONL line's fields with the given
    writer schema (what `engage produce` sends)."""
    with open(writer_path, "rb") as f:
        raw = json.load(f)
    rec = {}
    for fd in raw["fields"]:
        n = fd["name"]
        if n in line:
            rec[n] = line[n]
        elif "default" in fd:
            rec[n] = fd["default"]
        else:
            raise ValueError(f"line lacks required field {n!r}")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _schema(writer_path), rec)
    return b"\x00" + struct.pack(">i", schema_id) + buf.getvalue()


# --------------------------------------------------------------------------
# Kafka's default partitioner for keyed records (murmur2, Java-compatible)

def murmur2(data: bytes) -> int:
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length - length % 4
    extra = length % 4
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def default_partition(key: Optional[bytes], n: int) -> int:
    if key is None:
        raise ValueError("line without 'partition' and without a key: partition is random")
    return (murmur2(key) & 0x7FFFFFFF) % n


# --------------------------------------------------------------------------
# Input

def read_jsonl(path: str) -> List[dict]:
    out = []
    with open(path, "r", encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            out.append(obj)
    return out


def record_key(line: dict) -> Optional[bytes]:
    if line.get("key_b64") is not None:
        return base64.b64decode(line["key_b64"])
    if line.get("key") is not None:
        return line["key"].encode("utf-8")
    if line.get("user_id") is not None:
        return line["user_id"].encode("utf-8")
    return None


def utc_date(ms: int) -> str:
    return day_to_date(ms // DAY_MS)


def day_to_date(day: int) -> str:
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()


def _b64(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else base64.b64encode(b).decode("ascii")


# --------------------------------------------------------------------------
# The batch computation

def classify(lines: List[dict], params: Params):
    """First pass: assigns partition/offset to every line and classifies it.

    Returns a list of dicts, one per line, in file order:
      {"line", "partition", "offset", "key", "outcome", "reason", "error",
       "event": {event_id, user_id, timestamp} or None}
    outcome is one of "dead", "late", "dup", "counted".
    """
    if not params.schemas:
        raise ValueError("no schemas configured")
    first_id = next(iter(params.schemas))
    next_offset: Dict[int, int] = collections.defaultdict(int)
    max_ts: Dict[int, int] = {}  # partition -> max timestamp of non-late valid records
    seen_ids = set()
    out = []
    for line in lines:
        key = record_key(line)
        part = line.get("partition")
        if part is None:
            part = default_partition(key, params.partitions)
        off = next_offset[part]
        next_offset[part] += 1
        kafka_ts = line.get("kafka_timestamp", line.get("timestamp"))
        item = {"line": line, "partition": part, "offset": off, "key": key,
                "outcome": None, "reason": None, "error": None, "event": None}
        out.append(item)

        def dead(reason, error):
            item["outcome"], item["reason"], item["error"] = "dead", reason, error

        # 1. framing, schema id, Avro
        if "raw_value_b64" in line:
            value = base64.b64decode(line["raw_value_b64"])
            if len(value) < 5 or value[0] != 0:
                dead("bad_framing", f"value of {len(value)} bytes, first byte "
                     f"{value[0] if value else None}")
                continue
            sid = struct.unpack(">i", value[1:5])[0]
            if sid not in params.schemas:
                dead("unknown_schema_id", f"schema id {sid}")
                continue
            try:
                rec = decode_user_action(value[5:], params.schemas[sid])
            except ValueError as e:
                dead("undecodable_avro", str(e))
                continue
            ev = {"event_id": rec["event_id"], "user_id": rec["user_id"],
                  "timestamp": rec["timestamp"]}
        else:
            sid = line.get("schema_id", first_id)
            if sid not in params.schemas:
                raise ValueError(f"line names schema_id {sid}, which is not configured "
                                 "(engage produce would refuse it)")
            ev = {"event_id": line["event_id"], "user_id": line["user_id"],
                  "timestamp": int(line["timestamp"])}
        uid_bytes = ev["user_id"].encode("utf-8")
        # 2. user id
        if len(uid_bytes) == 0 or len(uid_bytes) > params.max_user_id_bytes:
            dead("bad_user_id", f"user id of {len(uid_bytes)} bytes")
            continue
        # 3. key
        if (key or b"") != uid_bytes:
            dead("key_mismatch", f"key {key!r} != user id")
            continue
        # 4. timestamp range
        ts = ev["timestamp"]
        if ts < params.min_ts_ms or (kafka_ts is not None
                                     and ts > int(kafka_ts) + params.max_skew_ms):
            dead("timestamp_out_of_range", f"timestamp {ts}, kafka timestamp {kafka_ts}")
            continue
        item["event"] = ev
        # 5. lateness against the watermark before this record
        if part in max_ts and ts < max_ts[part] - params.grace_ms:
            item["outcome"] = "late"
            continue
        max_ts[part] = max(max_ts.get(part, ts), ts)
        # 6. duplicates
        if ev["event_id"] in seen_ids:
            item["outcome"] = "dup"
            continue
        seen_ids.add(ev["event_id"])
        item["outcome"] = "counted"
    return out


def sessionize(counted: Iterable[Tuple[str, int]], gap_ms: int) -> List[dict]:
    """counted: (user_id, ts) pairs. Returns sessions sorted by (user, start)."""
    by_user: Dict[str, List[int]] = collections.defaultdict(list)
    for uid, ts in counted:
        by_user[uid].append(ts)
    sessions = []
    for uid in sorted(by_user):
        tss = sorted(by_user[uid])
        start = prev = tss[0]
        n = 1
        for ts in tss[1:]:
            if ts - prev <= gap_ms:
                n += 1
            else:
                sessions.append(_session(uid, start, prev, n))
                start, n = ts, 1
            prev = ts
        sessions.append(_session(uid, start, prev, n))
    return sessions


def _session(uid, start, end, n):
    return {"user_id": uid, "start_ms": start, "end_ms": end, "duration_ms": end - start,
            "actions": n, "date": utc_date(start)}


def daily_metrics(counted: List[Tuple[str, int]], sessions: List[dict]) -> List[dict]:
    if not counted:
        return []
    active: Dict[int, set] = collections.defaultdict(set)
    for uid, ts in counted:
        active[ts // DAY_MS].add(uid)
    first, last = min(active), max(active)
    by_start: Dict[int, List[dict]] = collections.defaultdict(list)
    for s in sessions:
        by_start[s["start_ms"] // DAY_MS].append(s)
    out = []
    for d in range(first, last + 1):
        wau, mau = set(), set()
        for k in range(7):
            wau |= active.get(d - k, set())
        for k in range(30):
            mau |= active.get(d - k, set())
        ss = by_start.get(d, [])
        row = {
            "date": day_to_date(d),
            "dau": len(active.get(d, ())),
            "wau": len(wau),
            "mau": len(mau),
            "sessions": len(ss),
            "session_users": len({s["user_id"] for s in ss}),
            "avg_duration_ms": (sum(s["duration_ms"] for s in ss) / len(ss)) if ss else 0.0,
            "actions_per_session": (sum(s["actions"] for s in ss) / len(ss)) if ss else 0.0,
        }
        for f in DAILY_IQR_FIELDS:
            row[f] = None
        out.append(row)
    return out


def quantile7(xs: List[int], p: float) -> float:
    """Hyndman-Fan type 7 quantile of the sorted, non-empty list xs: linear
    interpolation between the closest ranks, at position h = (n - 1) * p
    (0-based)."""
    n = len(xs)
    if n == 0:
        raise ValueError("quantile of nothing")
    h = (n - 1) * p
    j = math.floor(h)
    if j >= n - 1:
        return float(xs[n - 1])
    return xs[j] + (h - j) * (xs[j + 1] - xs[j])


def day_session_metrics(date: str, day_sessions: List[dict], k: float) -> dict:
    """The SessionMetrics record of one day from its sessions."""
    row = {"date": date, "sessions": len(day_sessions), "iqr_multiplier": float(k)}
    if not day_sessions:
        for f in SESSION_METRICS_DOUBLES[:8]:
            row[f] = None
        row.update(valid_sessions=0, valid_users=0, valid_avg_duration_ms=0.0,
                   valid_actions_per_session=0.0, duration_outliers=0, actions_outliers=0)
        return row
    durations = sorted(s["duration_ms"] for s in day_sessions)
    actions = sorted(s["actions"] for s in day_sessions)
    dq1, dq3 = quantile7(durations, 0.25), quantile7(durations, 0.75)
    aq1, aq3 = quantile7(actions, 0.25), quantile7(actions, 0.75)
    dlo, dhi = dq1 - k * (dq3 - dq1), dq3 + k * (dq3 - dq1)
    alo, ahi = aq1 - k * (aq3 - aq1), aq3 + k * (aq3 - aq1)
    valid = []
    d_out = a_out = 0
    for s in day_sessions:
        d_ok = dlo <= s["duration_ms"] <= dhi  # inclusive fences
        a_ok = alo <= s["actions"] <= ahi
        d_out += not d_ok
        a_out += not a_ok
        if d_ok and a_ok:
            valid.append(s)
    row.update(
        duration_q1=dq1, duration_q3=dq3, actions_q1=aq1, actions_q3=aq3,
        duration_lower_fence=dlo, duration_upper_fence=dhi,
        actions_lower_fence=alo, actions_upper_fence=ahi,
        valid_sessions=len(valid),
        valid_users=len({s["user_id"] for s in valid}),
        valid_avg_duration_ms=(sum(s["duration_ms"] for s in valid) / len(valid)
                               if valid else 0.0),
        valid_actions_per_session=(sum(s["actions"] for s in valid) / len(valid)
                                   if valid else 0.0),
        duration_outliers=d_out, actions_outliers=a_out)
    return row


def session_metrics(sessions: List[dict], daily: List[dict], k: float = 1.5) -> List[dict]:
    """One SessionMetrics record per day of `daily` (every day from the first
    to the last event day), over the sessions that started on it."""
    by_date: Dict[str, List[dict]] = collections.defaultdict(list)
    for s in sessions:
        by_date[s["date"]].append(s)
    return [day_session_metrics(d["date"], by_date.get(d["date"], []), k) for d in daily]


def compute(lines: List[dict], params: Optional[Params] = None) -> dict:
    params = params or Params()
    items = classify(lines, params)
    counted = [(it["event"]["user_id"], it["event"]["timestamp"])
               for it in items if it["outcome"] == "counted"]
    sessions = sessionize(counted, params.gap_ms)
    daily = daily_metrics(counted, sessions)
    smetrics = session_metrics(sessions, daily, params.iqr_multiplier)

    def original_value(it) -> bytes:
        line = it["line"]
        if "raw_value_b64" in line:
            return base64.b64decode(line["raw_value_b64"])
        sid = line.get("schema_id", next(iter(params.schemas)))
        return encode_value(line, sid, params.schemas[sid])

    dead, late = [], []
    for it in items:
        if it["outcome"] == "dead":
            dead.append({"partition": it["partition"], "offset": it["offset"],
                         "reason": it["reason"], "error": it["error"],
                         "key_b64": _b64(it["key"]), "value_b64": _b64(original_value(it))})
        elif it["outcome"] == "late":
            late.append({"partition": it["partition"], "offset": it["offset"],
                         "key_b64": _b64(it["key"]), "value_b64": _b64(original_value(it))})

    # Users whose counted events sit on more than one partition would be
    # sessionized separately by a per-partition engine; flag it.
    parts_of_user: Dict[str, set] = collections.defaultdict(set)
    for it in items:
        if it["outcome"] == "counted":
            parts_of_user[it["event"]["user_id"]].add(it["partition"])
    multi = sorted(u for u, p in parts_of_user.items() if len(p) > 1)

    counts = collections.Counter(it["outcome"] for it in items)
    return {
        "params": {"grace_ms": params.grace_ms, "gap_ms": params.gap_ms,
                   "max_skew_ms": params.max_skew_ms, "min_ts_ms": params.min_ts_ms,
                   "max_user_id_bytes": params.max_user_id_bytes,
                   "iqr_multiplier": params.iqr_multiplier,
                   "schemas": {str(k): v for k, v in params.schemas.items()}},
        "stats": {"lines": len(items), "counted": counts["counted"], "dup": counts["dup"],
                  "late": counts["late"], "dead": counts["dead"],
                  "sessions": len(sessions), "days": len(daily),
                  "partition_records": {str(p): n for p, n in sorted(collections.Counter(
                      it["partition"] for it in items).items())}},
        "users_on_multiple_partitions": multi,
        "sessions": sessions,
        "daily": daily,
        "session_metrics": smetrics,
        "dead_letters": dead,
        "late": late,
    }


def outcomes(lines: List[dict], params: Optional[Params] = None) -> List[str]:
    """Per line: "counted", "dup", "late" or "dead:<reason>" (for tests)."""
    res = []
    for it in classify(lines, params or Params()):
        res.append("dead:" + it["reason"] if it["outcome"] == "dead" else it["outcome"])
    return res


# --------------------------------------------------------------------------
# Comparison

def _rel_close(a, b, rel=1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    if a == b:
        return True
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _norm_key(k):
    return k or ""  # null key == empty key


def compare(expected: dict, actual: dict, check_iqr_null: bool = True,
            check_bytes: bool = True) -> List[str]:
    """Returns a list of human-readable differences (empty if they match)."""
    diffs: List[str] = []

    # ---- sessions
    def stup(s):
        return tuple(s[f] for f in SESSION_FIELDS)

    exp_s = collections.Counter(stup(s) for s in expected["sessions"])
    act_s = collections.Counter(stup(s) for s in actual["sessions"])
    for t, n in sorted(act_s.items(), key=str):
        if n > 1:
            diffs.append(f"session emitted {n} times: {dict(zip(SESSION_FIELDS, t))}")
    missing = sorted((exp_s - act_s).elements(), key=str)
    extra = sorted((act_s - exp_s).elements(), key=str)
    # pair up missing/extra sessions of the same user and start for readability
    extra_by: Dict[Tuple[str, int], List[tuple]] = collections.defaultdict(list)
    for t in extra:
        extra_by[(t[0], t[1])].append(t)
    for t in missing:
        others = extra_by.get((t[0], t[1]))
        if others:
            other = others.pop(0)
            diffs.append(f"session {t[0]!r} start {t[1]} ({t[5]}): expected "
                         f"{dict(zip(SESSION_FIELDS[2:], t[2:]))}, got "
                         f"{dict(zip(SESSION_FIELDS[2:], other[2:]))}")
        else:
            diffs.append(f"missing session {dict(zip(SESSION_FIELDS, t))}")
    for ts in extra_by.values():
        for t in ts:
            diffs.append(f"unexpected session {dict(zip(SESSION_FIELDS, t))}")
    ids = collections.Counter(s.get("session_id") for s in actual["sessions"])
    for sid, n in ids.items():
        if not sid:
            diffs.append(f"{n} session(s) with empty session_id")
        elif n > 1:
            diffs.append(f"session_id {sid!r} used {n} times")

    # ---- daily metrics
    exp_d = {d["date"]: d for d in expected["daily"]}
    act_count = collections.Counter(d["date"] for d in actual["daily"])
    for date, n in sorted(act_count.items()):
        if n > 1:
            diffs.append(f"daily metrics for {date} emitted {n} times")
    act_d = {d["date"]: d for d in actual["daily"]}
    for date in sorted(set(exp_d) - set(act_d)):
        diffs.append(f"missing daily metrics for {date}: {_daily_brief(exp_d[date])}")
    for date in sorted(set(act_d) - set(exp_d)):
        diffs.append(f"unexpected daily metrics for {date}: {_daily_brief(act_d[date])}")
    for date in sorted(set(exp_d) & set(act_d)):
        e, a = exp_d[date], act_d[date]
        for f in DAILY_COUNT_FIELDS:
            if e[f] != a.get(f):
                diffs.append(f"daily {date} {f}: expected {e[f]}, got {a.get(f)}")
        for f in DAILY_DOUBLE_FIELDS:
            if not _rel_close(e[f], a.get(f)):
                diffs.append(f"daily {date} {f}: expected {e[f]!r}, got {a.get(f)!r}")
        if check_iqr_null:
            for f in DAILY_IQR_FIELDS:
                if a.get(f) is not None:
                    diffs.append(f"daily {date} {f}: expected null, got {a.get(f)!r}")

    # ---- dead letters
    def by_pos(recs, what):
        m = {}
        for r in recs:
            pos = (int(r["partition"]), int(r["offset"]))
            if pos in m:
                diffs.append(f"{what} for partition {pos[0]} offset {pos[1]} emitted twice")
            m[pos] = r
        return m

    exp_dl = by_pos(expected["dead_letters"], "expected dead letter")
    act_dl = by_pos(actual["dead_letters"], "dead letter")
    for pos in sorted(set(exp_dl) | set(act_dl)):
        e, a = exp_dl.get(pos), act_dl.get(pos)
        if a is None:
            diffs.append(f"missing dead letter p{pos[0]}@{pos[1]} reason {e['reason']}")
        elif e is None:
            diffs.append(f"unexpected dead letter p{pos[0]}@{pos[1]} reason {a.get('reason')}")
        else:
            if e["reason"] != a.get("reason"):
                diffs.append(f"dead letter p{pos[0]}@{pos[1]}: reason expected "
                             f"{e['reason']}, got {a.get('reason')}")
            if check_bytes:
                _cmp_bytes(diffs, f"dead letter p{pos[0]}@{pos[1]}", e, a)

    # ---- late records
    exp_l = by_pos(expected["late"], "expected late record")
    act_l = by_pos(actual["late"], "late record")
    for pos in sorted(set(exp_l) | set(act_l)):
        e, a = exp_l.get(pos), act_l.get(pos)
        if a is None:
            diffs.append(f"missing late record p{pos[0]}@{pos[1]}")
        elif e is None:
            diffs.append(f"unexpected late record p{pos[0]}@{pos[1]}")
        elif check_bytes:
            _cmp_bytes(diffs, f"late record p{pos[0]}@{pos[1]}", e, a)

    # ---- session metrics (engage compact), when the caller read them
    if "session_metrics" in actual and "session_metrics" in expected:
        diffs += compare_session_metrics(expected["session_metrics"],
                                         actual["session_metrics"])
    return diffs


def compare_session_metrics(expected: List[dict], actual: List[dict]) -> List[str]:
    """SessionMetrics records: one per expected date, counts equal exactly,
    doubles within 1e-9 relative (null only where null is expected)."""
    diffs: List[str] = []
    exp = {r["date"]: r for r in expected}
    cnt = collections.Counter(r.get("date") for r in actual)
    for date, n in sorted(cnt.items(), key=str):
        if n > 1:
            diffs.append(f"session metrics for {date} emitted {n} times")
    act = {r.get("date"): r for r in actual}
    for date in sorted(set(exp) - set(act)):
        diffs.append(f"missing session metrics for {date} ({exp[date]['sessions']} sessions)")
    for date in sorted(set(act) - set(exp), key=str):
        diffs.append(f"unexpected session metrics for {date}")
    for date in sorted(set(exp) & set(act)):
        e, a = exp[date], act[date]
        for f in SESSION_METRICS_COUNTS:
            if e[f] != a.get(f) or isinstance(a.get(f), bool):
                diffs.append(f"session metrics {date} {f}: expected {e[f]}, got {a.get(f)!r}")
        for f in SESSION_METRICS_DOUBLES:
            if f not in a or not _rel_close(e[f], a[f]):
                diffs.append(f"session metrics {date} {f}: expected {e[f]!r}, "
                             f"got {a.get(f, '<absent>')!r}")
    return diffs


def _cmp_bytes(diffs, what, e, a):
    if _norm_key(e.get("key_b64")) != _norm_key(a.get("key_b64")):
        diffs.append(f"{what}: key expected {e.get('key_b64')!r} (b64), got "
                     f"{a.get('key_b64')!r}")
    if (e.get("value_b64") or "") != (a.get("value_b64") or ""):
        diffs.append(f"{what}: value expected {e.get('value_b64')!r} (b64), got "
                     f"{a.get('value_b64')!r}")


def _daily_brief(d):
    return {f: d.get(f) for f in ("dau", "wau", "mau", "sessions", "session_users")}


def format_diffs(diffs: List[str], limit: int = 20) -> str:
    if not diffs:
        return "outputs match the oracle"
    head = [f"{len(diffs)} difference(s) from the oracle"
            + (f", first {limit}:" if len(diffs) > limit else ":")]
    head += ["  - " + d for d in diffs[:limit]]
    return "\n".join(head)


def assert_match(expected: dict, actual: dict, **kw) -> None:
    diffs = compare(expected, actual, **kw)
    if diffs:
        raise AssertionError(format_diffs(diffs))


# --------------------------------------------------------------------------
# CLI

def _parse_schema_arg(items: List[str]) -> Dict[int, str]:
    out: Dict[int, str] = {}
    for it in items:
        for part in it.split(","):
            sid, _, path = part.partition("=")
            if not path:
                raise argparse.ArgumentTypeError(f"bad --schema {part!r} (want ID=path)")
            # relative paths: to the current directory if there, else to the repo
            path = os.path.abspath(path if os.path.exists(path) else os.path.join(ROOT, path))
            out[int(sid)] = path
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("events")
    ap.add_argument("--grace-ms", type=int, default=Params.grace_ms)
    ap.add_argument("--gap-ms", type=int, default=Params.gap_ms)
    ap.add_argument("--max-skew-ms", type=int, default=Params.max_skew_ms)
    ap.add_argument("--min-ts-ms", type=int, default=Params.min_ts_ms)
    ap.add_argument("--max-user-id-bytes", type=int, default=Params.max_user_id_bytes)
    ap.add_argument("--iqr-multiplier", type=float, default=Params.iqr_multiplier)
    ap.add_argument("--partitions", type=int, default=4,
                    help="partition count for lines without 'partition' (murmur2 on the key)")
    ap.add_argument("--schema", action="append", default=[],
                    help="ID=path (repeatable or comma-separated); default: "
                         + ",".join(f"{k}={os.path.relpath(v, ROOT)}"
                                    for k, v in DEFAULT_SCHEMAS.items()))
    ap.add_argument("--out", required=True, help="expected.json ('-' = stdout)")
    a = ap.parse_args(argv)
    params = Params(grace_ms=a.grace_ms, gap_ms=a.gap_ms, max_skew_ms=a.max_skew_ms,
                    min_ts_ms=a.min_ts_ms, max_user_id_bytes=a.max_user_id_bytes,
                    partitions=a.partitions, iqr_multiplier=a.iqr_multiplier,
                    schemas=_parse_schema_arg(a.schema) if a.schema else dict(DEFAULT_SCHEMAS))
    exp = compute(read_jsonl(a.events), params)
    text = json.dumps(exp, indent=1, ensure_ascii=False) + "\n"
    if a.out == "-":
        sys.stdout.write(text)
    else:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    print(json.dumps(exp["stats"]), file=sys.stderr)
    if exp["users_on_multiple_partitions"]:
        print(f"warning: {len(exp['users_on_multiple_partitions'])} user(s) have counted "
              "events on more than one partition", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
