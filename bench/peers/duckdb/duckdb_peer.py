#!/usr/bin/env python3
"""DuckDB peer: engage's metrics as batch SQL over Parquet.

    duckdb_peer.py export --csv counted.csv --parquet events.parquet
    duckdb_peer.py sql --parquet events.parquet --out result.json [--sessions-out s.parquet]

`export` converts the harness's CSV of counted events (the events the oracle
counts: batch SQL has no lateness or dead letters, so it is given exactly
those) into Parquet (zstd). `sql` computes, in one connection:
  - sessions by LAG over each user's events: a gap > 30 min starts a new one
    (a gap of exactly 30:00.000 continues, as in engage);
  - DAU / WAU / MAU as exact COUNT(DISTINCT) over day ranges (range join);
  - per day: sessions started, distinct session users, mean duration and
    actions, quantile_cont quartiles, IQR fences and the filtered metrics.
It prints one JSON object: {"daily": [...], "timing": {...}, "config": {...}}.
The timed part is the SQL only (connection set-up and the optional session
export for verification are outside it).
"""
import argparse
import json
import os
import sys
import time

import duckdb

DAY_MS = 86_400_000
GAP_MS = 1_800_000

SESSIONS_SQL = f"""
CREATE TEMP TABLE sessions AS
WITH marked AS (
  SELECT user_id, ts,
         CASE WHEN ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) <= {GAP_MS}
              THEN 0 ELSE 1 END AS new_session
  FROM ev),
numbered AS (
  SELECT user_id, ts,
         sum(new_session) OVER (PARTITION BY user_id ORDER BY ts
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sn
  FROM marked)
SELECT user_id, min(ts) AS start_ms, max(ts) AS end_ms, max(ts) - min(ts) AS duration_ms,
       count(*)::INTEGER AS actions, (min(ts) // {DAY_MS})::INTEGER AS day
FROM numbered
GROUP BY user_id, sn
"""

DAILY_SQL = f"""
WITH ud AS (SELECT DISTINCT user_id, (ts // {DAY_MS})::INTEGER AS day FROM ev),
bounds AS (SELECT min(day) AS lo, max(day) AS hi FROM ud),
days AS (SELECT range::INTEGER AS day FROM bounds, range(bounds.lo, bounds.hi + 1)),
dau AS (SELECT day, count(*) AS dau FROM ud GROUP BY day),
wau AS (SELECT d.day, count(DISTINCT u.user_id) AS wau
        FROM days d JOIN ud u ON u.day BETWEEN d.day - 6 AND d.day GROUP BY d.day),
mau AS (SELECT d.day, count(DISTINCT u.user_id) AS mau
        FROM days d JOIN ud u ON u.day BETWEEN d.day - 29 AND d.day GROUP BY d.day),
sess AS (
  SELECT day, count(*) AS sessions, count(DISTINCT user_id) AS session_users,
         avg(duration_ms) AS avg_duration_ms, avg(actions) AS actions_per_session,
         quantile_cont(duration_ms, 0.25) AS dq1, quantile_cont(duration_ms, 0.75) AS dq3,
         quantile_cont(actions, 0.25) AS aq1, quantile_cont(actions, 0.75) AS aq3
  FROM sessions GROUP BY day),
fences AS (
  SELECT day, dq1, dq3, aq1, aq3,
         dq1 - 1.5 * (dq3 - dq1) AS dlo, dq3 + 1.5 * (dq3 - dq1) AS dhi,
         aq1 - 1.5 * (aq3 - aq1) AS alo, aq3 + 1.5 * (aq3 - aq1) AS ahi
  FROM sess),
flagged AS (
  SELECT s.user_id, s.day, s.duration_ms, s.actions,
         s.duration_ms BETWEEN f.dlo AND f.dhi AS in_d,
         s.actions BETWEEN f.alo AND f.ahi AS in_a
  FROM sessions s JOIN fences f USING (day)),
valid AS (
  SELECT day,
         count(*) FILTER (WHERE in_d AND in_a) AS valid_sessions,
         count(DISTINCT user_id) FILTER (WHERE in_d AND in_a) AS valid_users,
         avg(duration_ms) FILTER (WHERE in_d AND in_a) AS valid_avg_duration_ms,
         avg(actions) FILTER (WHERE in_d AND in_a) AS valid_actions_per_session,
         count(*) FILTER (WHERE NOT in_d) AS duration_outliers,
         count(*) FILTER (WHERE NOT in_a) AS actions_outliers
  FROM flagged GROUP BY day)
SELECT strftime(DATE '1970-01-01' + d.day, '%Y-%m-%d') AS date,
       coalesce(dau.dau, 0) AS dau, wau.wau, mau.mau,
       coalesce(sess.sessions, 0) AS sessions, coalesce(sess.session_users, 0) AS session_users,
       coalesce(sess.avg_duration_ms, 0.0) AS avg_duration_ms,
       coalesce(sess.actions_per_session, 0.0) AS actions_per_session,
       f.dq1 AS duration_q1, f.dq3 AS duration_q3, f.aq1 AS actions_q1, f.aq3 AS actions_q3,
       f.dlo AS duration_lower_fence, f.dhi AS duration_upper_fence,
       f.alo AS actions_lower_fence, f.ahi AS actions_upper_fence,
       v.valid_sessions, v.valid_users,
       coalesce(v.valid_avg_duration_ms, 0.0) AS valid_avg_duration_ms,
       coalesce(v.valid_actions_per_session, 0.0) AS valid_actions_per_session,
       v.duration_outliers, v.actions_outliers
FROM days d
LEFT JOIN dau USING (day) LEFT JOIN wau USING (day) LEFT JOIN mau USING (day)
LEFT JOIN sess USING (day) LEFT JOIN fences f USING (day) LEFT JOIN valid v USING (day)
ORDER BY d.day
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["export", "sql"])
    ap.add_argument("--csv")
    ap.add_argument("--parquet", required=True)
    ap.add_argument("--out")
    ap.add_argument("--sessions-out")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory-limit", default="")
    a = ap.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    if a.memory_limit:
        con.execute(f"SET memory_limit = '{a.memory_limit}'")
    config = {"duckdb": duckdb.__version__, "threads": a.threads,
              "memory_limit": con.execute("SELECT current_setting('memory_limit')").fetchone()[0]}

    if a.phase == "export":
        t0 = time.perf_counter()
        con.execute(f"""
            COPY (SELECT * FROM read_csv('{a.csv}', header = true, columns = {{
                    'event_id': 'VARCHAR', 'user_id': 'VARCHAR', 'ts': 'BIGINT',
                    'action': 'VARCHAR', 'platform': 'VARCHAR', 'app_version': 'VARCHAR',
                    'partition': 'INTEGER'}}))
            TO '{a.parquet}' (FORMAT parquet, COMPRESSION zstd)""")
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{a.parquet}')").fetchone()[0]
        res = {"rows": rows, "timing": {"export_s": time.perf_counter() - t0},
               "parquet_bytes": os.path.getsize(a.parquet), "config": config}
        print(json.dumps(res))
        return 0

    con.execute(f"CREATE VIEW ev AS SELECT user_id, ts FROM read_parquet('{a.parquet}')")
    t0 = time.perf_counter()
    con.execute(SESSIONS_SQL)
    t1 = time.perf_counter()
    cur = con.execute(DAILY_SQL)
    cols = [c[0] for c in cur.description]
    daily = [dict(zip(cols, r)) for r in cur.fetchall()]
    t2 = time.perf_counter()
    timing = {"sql_s": t2 - t0, "sessions_s": t1 - t0, "daily_s": t2 - t1}
    if a.sessions_out:
        con.execute(f"""COPY (SELECT user_id, start_ms, end_ms, duration_ms, actions,
                              strftime(DATE '1970-01-01' + day, '%Y-%m-%d') AS date FROM sessions)
                        TO '{a.sessions_out}' (FORMAT parquet)""")
    res = {"daily": daily, "timing": timing, "config": config,
           "sessions": con.execute("SELECT count(*) FROM sessions").fetchone()[0]}
    text = json.dumps(res)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(json.dumps({"timing": timing, "config": config}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
