"""Checks a peer's results against the reference (bench/tools/reference.py).

A peer's results: {"daily": [{date, dau, wau, mau, sessions, session_users,
avg_duration_ms, actions_per_session, [IQR fields]}], "sessions": [{user_id,
start_ms, end_ms, duration_ms, actions, date}] or None}.
"""
from __future__ import annotations

import collections
import hashlib
import json
import subprocess
from typing import Dict, List, Optional

# the reference keeps its session list (for a full diff) up to this many
FULL_SESSION_DIFF_MAX = 1_000_000

COUNT_FIELDS = ("dau", "wau", "mau", "sessions", "session_users")
DOUBLE_FIELDS = ("avg_duration_ms", "actions_per_session")
IQR_FIELDS = ("duration_q1", "duration_q3", "actions_q1", "actions_q3",
              "duration_lower_fence", "duration_upper_fence", "actions_lower_fence",
              "actions_upper_fence", "valid_sessions", "valid_users",
              "valid_avg_duration_ms", "valid_actions_per_session",
              "duration_outliers", "actions_outliers")
SESSION_FIELDS = ("user_id", "start_ms", "end_ms", "duration_ms", "actions", "date")


def _close(a, b, rel=1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def _rel_err(exp, act) -> Optional[float]:
    if exp is None or act is None:
        return None
    if exp == 0:
        return 0.0 if act == 0 else float("inf")
    return abs(float(act) - float(exp)) / abs(float(exp))


def dump_topic(engage_bin: str, bootstrap: str, topic: str, kind: str, out_path: str,
               lazy: bool = False):
    """`engage dump TOPIC --kind KIND` into out_path; returns the records'
    values in partition/offset order (dump's order), or with lazy=True a
    function returning an iterator over them."""
    with open(out_path, "wb") as out:
        subprocess.run([engage_bin, "dump", topic, "--kind", kind, "-b", bootstrap],
                       stdout=out, stderr=subprocess.DEVNULL, check=True, timeout=3600)

    def values():
        with open(out_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["value"]
    return values if lazy else list(values())


def last_per_date(daily: List[dict]) -> List[dict]:
    """Latest record per date (a KTable changelog read as a table)."""
    m: Dict[str, dict] = {}
    for d in daily:
        m[d["date"]] = d
    return [m[k] for k in sorted(m)]


def session_fingerprint(sessions) -> dict:
    n, acc = 0, 0
    for s in sessions:
        h = hashlib.blake2b(repr(tuple(s[f] for f in SESSION_FIELDS)).encode(), digest_size=8)
        acc = (acc + int.from_bytes(h.digest(), "little")) % (1 << 64)
        n += 1
    return {"count": n, "sum64": acc}


def compare_sessions(ref: dict, sessions):
    """sessions: a list of session dicts or a function returning an iterator
    of them. Full multiset diff when the reference kept its session list
    (small inputs), else the count + order-independent 64-bit fingerprint."""
    it = sessions() if callable(sessions) else sessions
    diffs = []
    if ref.get("sessions") is not None:
        exp_s, act_s = ref["sessions"], list(it)
        sres = {"expected": len(exp_s), "got": len(act_s)}
        ce = collections.Counter(tuple(s[f] for f in SESSION_FIELDS) for s in exp_s)
        ca = collections.Counter(tuple(s[f] for f in SESSION_FIELDS) for s in act_s)
        missing = list((ce - ca).elements())
        extra = list((ca - ce).elements())
        sres.update(missing=len(missing), unexpected=len(extra),
                    examples_missing=[dict(zip(SESSION_FIELDS, t)) for t in missing[:5]],
                    examples_unexpected=[dict(zip(SESSION_FIELDS, t)) for t in extra[:5]])
        if missing or extra:
            diffs.append(f"sessions: {len(missing)} missing, {len(extra)} unexpected "
                         f"(of {len(exp_s)} expected)")
    else:
        fe, fa = ref["sessions_fingerprint"], session_fingerprint(it)
        sres = {"expected": fe["count"], "got": fa["count"], "method": "fingerprint",
                "fingerprint_expected": fe, "fingerprint_got": fa}
        if fe != fa:
            diffs.append(f"sessions differ (count {fa['count']} vs {fe['count']}, "
                         "multiset fingerprint differs)")
    return sres, diffs


def compare(ref: dict, act: dict, exact_counts: bool = True, check_iqr: bool = False,
            max_listed: int = 20) -> dict:
    """Returns {"match": bool, "diffs": [...], "days", "approx_error": {...},
    "sessions": {...}, "iqr": {...}}.

    exact_counts=False (Spark): count fields are compared as estimates; their
    relative errors are summarized in approx_error instead of being diffs."""
    diffs: List[str] = []
    exp_d = {d["date"]: d for d in ref["daily"]}
    dates = collections.Counter(d["date"] for d in act["daily"])
    for date, n in sorted(dates.items()):
        if n > 1:
            diffs.append(f"daily {date} emitted {n} times")
    act_d = {d["date"]: d for d in act["daily"]}
    for date in sorted(set(exp_d) - set(act_d)):
        diffs.append(f"missing daily metrics for {date}")
    for date in sorted(set(act_d) - set(exp_d)):
        diffs.append(f"unexpected daily metrics for {date}")
    errs: Dict[str, List[float]] = collections.defaultdict(list)
    for date in sorted(set(exp_d) & set(act_d)):
        e, a = exp_d[date], act_d[date]
        for f in COUNT_FIELDS:
            if exact_counts and e[f] != a.get(f):
                diffs.append(f"daily {date} {f}: expected {e[f]}, got {a.get(f)}")
            errs[f].append(_rel_err(e[f], a.get(f)))
        for f in DOUBLE_FIELDS:
            if not _close(e[f], a.get(f)):
                diffs.append(f"daily {date} {f}: expected {e[f]!r}, got {a.get(f)!r}")
            errs[f].append(_rel_err(e[f], a.get(f)))
    approx = {}
    for f, xs in errs.items():
        xs = [x for x in xs if x is not None]
        if xs:
            approx[f] = {"max_rel_err": max(xs), "mean_rel_err": sum(xs) / len(xs),
                         "days_exact": sum(1 for x in xs if x == 0), "days": len(xs)}
    res = {"days_expected": len(exp_d), "days_got": len(act_d), "approx_error": approx}

    if check_iqr and ref.get("daily_iqr"):
        iqr_diffs, iqr_err = [], collections.defaultdict(list)
        for date, e in ref["daily_iqr"].items():
            a = act_d.get(date)
            if a is None:
                continue
            for f in IQR_FIELDS:
                if not _close(e[f], a.get(f)):
                    iqr_diffs.append(f"daily {date} {f}: expected {e[f]!r}, got {a.get(f)!r}")
                iqr_err[f].append(_rel_err(e[f], a.get(f)))
        res["iqr"] = {"match": not iqr_diffs, "diffs": iqr_diffs[:max_listed],
                      "n_diffs": len(iqr_diffs),
                      "max_rel_err": {f: max(x for x in xs if x is not None)
                                      for f, xs in iqr_err.items() if any(x is not None for x in xs)}}

    if act.get("sessions") is not None:
        sres, sdiffs = compare_sessions(ref, act["sessions"])
        diffs += sdiffs
        res["sessions"] = sres
    res["match"] = not diffs
    res["n_diffs"] = len(diffs)
    res["diffs"] = diffs[:max_listed]
    return res
