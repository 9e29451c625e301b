"""The expected results of a benchmark input, from the project's oracle.

tests/oracle/oracle.py keeps every line (dicts) in memory: about 2 KB a
line, 20 GB at 10 million events. This module runs the oracle's own rules
in one streaming pass instead (`classify_stream` mirrors oracle.classify,
using the oracle's helpers for keys, partitions and Avro), keeping only the
counted (user, timestamp) pairs, then calls the oracle's own
`sessionize` and `daily_metrics` on them. Whenever the input is small enough
(`--oracle-max-events`), the harness also runs the unmodified
oracle.compute/oracle.outcomes and checks that both agree line by line.

It also writes the counted events as CSV (input of the DuckDB and Spark
peers: batch jobs have no lateness or dead letters, so they get exactly the
events the oracle counts) and computes the per-day IQR fields exactly
(linear interpolation, as DuckDB's quantile_cont) for checking the batch
peers' IQR output.
"""
from __future__ import annotations

import base64
import collections
import csv
import json
import math
import os
import struct
import sys
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
import oracle  # noqa: E402

OUTCOME_CODES = {"counted": 0, "dup": 1, "late": 2}  # dead:<reason> = 3


def classify_stream(path: str, params: oracle.Params, counted_csv: Optional[str] = None):
    """One pass over a JSONL file with oracle.classify's rules.

    Returns (outcomes, counted, stats): outcomes is a list of "counted",
    "dup", "late" or "dead:<reason>" per line (same as oracle.outcomes);
    counted is a list of (user_id, timestamp) in file order.
    """
    first_id = next(iter(params.schemas))
    max_ts: Dict[int, int] = {}
    seen_ids = set()
    outcomes: List[str] = []
    counted: List[Tuple[str, int]] = []
    intern = sys.intern
    csv_f = open(counted_csv, "w", newline="", encoding="utf-8") if counted_csv else None
    w = csv.writer(csv_f) if csv_f else None
    if w:
        w.writerow(["event_id", "user_id", "ts", "action", "platform", "app_version", "partition"])
    try:
        with open(path, "r", encoding="utf-8") as f:
            for text in f:
                if not text.strip():
                    continue
                line = json.loads(text)
                key = oracle.record_key(line)
                part = line.get("partition")
                if part is None:
                    part = oracle.default_partition(key, params.partitions)
                kafka_ts = line.get("kafka_timestamp", line.get("timestamp"))
                if "raw_value_b64" in line:
                    value = base64.b64decode(line["raw_value_b64"])
                    if len(value) < 5 or value[0] != 0:
                        outcomes.append("dead:bad_framing")
                        continue
                    sid = struct.unpack(">i", value[1:5])[0]
                    if sid not in params.schemas:
                        outcomes.append("dead:unknown_schema_id")
                        continue
                    try:
                        rec = oracle.decode_user_action(value[5:], params.schemas[sid])
                    except ValueError:
                        outcomes.append("dead:undecodable_avro")
                        continue
                    ev = rec
                else:
                    sid = line.get("schema_id", first_id)
                    if sid not in params.schemas:
                        raise ValueError(f"line names schema_id {sid}, which is not configured")
                    ev = line
                uid = ev["user_id"]
                uid_bytes = uid.encode("utf-8")
                if len(uid_bytes) == 0 or len(uid_bytes) > params.max_user_id_bytes:
                    outcomes.append("dead:bad_user_id")
                    continue
                if (key or b"") != uid_bytes:
                    outcomes.append("dead:key_mismatch")
                    continue
                ts = int(ev["timestamp"])
                if ts < params.min_ts_ms or (kafka_ts is not None
                                             and ts > int(kafka_ts) + params.max_skew_ms):
                    outcomes.append("dead:timestamp_out_of_range")
                    continue
                m = max_ts.get(part)
                if m is not None and ts < m - params.grace_ms:
                    outcomes.append("late")
                    continue
                if m is None or ts > m:
                    max_ts[part] = ts
                eid = ev["event_id"]
                if eid in seen_ids:
                    outcomes.append("dup")
                    continue
                seen_ids.add(eid)
                outcomes.append("counted")
                uid = intern(uid)
                counted.append((uid, ts))
                if w:
                    w.writerow([eid, uid, ts, ev.get("action"), ev.get("platform"),
                                ev.get("app_version"), part])
    finally:
        if csv_f:
            csv_f.close()
    c = collections.Counter(o.split(":")[0] for o in outcomes)
    stats = {"lines": len(outcomes), "counted": c["counted"], "dup": c["dup"],
             "late": c["late"], "dead": c["dead"]}
    return outcomes, counted, stats


def quantile_cont(sorted_xs: List[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB quantile_cont)."""
    n = len(sorted_xs)
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_xs[lo] + (pos - lo) * (sorted_xs[hi] - sorted_xs[lo])


def iqr_fields(sessions: List[dict]) -> Dict[str, dict]:
    """Per date: the DailyMetrics IQR fields over the sessions that started
    that day. Fences are q1 - 1.5 IQR and q3 + 1.5 IQR; a session is valid
    when both its duration and its action count are inside their fences."""
    by_day: Dict[str, List[dict]] = collections.defaultdict(list)
    for s in sessions:
        by_day[s["date"]].append(s)
    out = {}
    for date, ss in by_day.items():
        d = sorted(s["duration_ms"] for s in ss)
        a = sorted(s["actions"] for s in ss)
        dq1, dq3 = quantile_cont(d, 0.25), quantile_cont(d, 0.75)
        aq1, aq3 = quantile_cont(a, 0.25), quantile_cont(a, 0.75)
        dlo, dhi = dq1 - 1.5 * (dq3 - dq1), dq3 + 1.5 * (dq3 - dq1)
        alo, ahi = aq1 - 1.5 * (aq3 - aq1), aq3 + 1.5 * (aq3 - aq1)
        dout = [s for s in ss if not (dlo <= s["duration_ms"] <= dhi)]
        aout = [s for s in ss if not (alo <= s["actions"] <= ahi)]
        valid = [s for s in ss if dlo <= s["duration_ms"] <= dhi and alo <= s["actions"] <= ahi]
        out[date] = {
            "duration_q1": dq1, "duration_q3": dq3, "actions_q1": aq1, "actions_q3": aq3,
            "duration_lower_fence": dlo, "duration_upper_fence": dhi,
            "actions_lower_fence": alo, "actions_upper_fence": ahi,
            "valid_sessions": len(valid), "valid_users": len({s["user_id"] for s in valid}),
            "valid_avg_duration_ms": (sum(s["duration_ms"] for s in valid) / len(valid)) if valid else 0.0,
            "valid_actions_per_session": (sum(s["actions"] for s in valid) / len(valid)) if valid else 0.0,
            "duration_outliers": len(dout), "actions_outliers": len(aout),
        }
    return out


def compute(path: str, params: oracle.Params, counted_csv: Optional[str] = None) -> dict:
    """Reference results: the oracle's sessions and daily metrics (plus IQR
    fields in daily_iqr), from the streaming classification."""
    outcomes, counted, stats = classify_stream(path, params, counted_csv)
    sessions = oracle.sessionize(counted, params.gap_ms)
    daily = oracle.daily_metrics(counted, sessions)
    stats["sessions"] = len(sessions)
    stats["days"] = len(daily)
    return {"outcomes": outcomes, "stats": stats, "sessions": sessions, "daily": daily,
            "daily_iqr": iqr_fields(sessions)}


def check_against_full_oracle(path: str, params: oracle.Params, ref: dict) -> List[str]:
    """Runs the unmodified oracle and lists every difference from ref."""
    lines = oracle.read_jsonl(path)
    outs = oracle.outcomes(lines, params)
    diffs = []
    if outs != ref["outcomes"]:
        bad = [i for i, (a, b) in enumerate(zip(outs, ref["outcomes"])) if a != b]
        diffs.append(f"outcomes differ on {len(bad) + abs(len(outs) - len(ref['outcomes']))} "
                     f"line(s), first {bad[:5]}")
    exp = oracle.compute(lines, params)
    actual = {"sessions": ref["sessions"], "daily": ref["daily"], "dead_letters": [], "late": []}
    for d in oracle.compare(exp, actual, check_bytes=False):
        if "dead letter" in d or "late record" in d or "session_id" in d:
            continue  # not produced by the streaming pass
        diffs.append(d)
    return diffs
