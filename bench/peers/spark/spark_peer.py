#!/usr/bin/env python3
"""Spark peer: the nightly batch job engage replaces, the way it is usually
written (pyspark, local[2]).

    spark_peer.py --parquet events.parquet --out result.json [--driver-memory 4g]

Over the same Parquet as the DuckDB peer (the events the oracle counts):
  - DAU: groupBy(day).agg(approx_count_distinct(user_id))  (HyperLogLog++, rsd 0.05)
  - WAU / MAU: approx_count_distinct(user_id) over a RANGE window of 7 / 30
    days on the distinct (user, day) rows (the "window functions" approach);
  - sessions: lag(ts) over each user's events, gap > 30 min starts a new
    session, running sum = session number, groupBy(user, session);
  - per day: sessions, approx_count_distinct session users, mean duration and
    actions, percentile_approx quartiles, IQR fences, filtered metrics.
Prints one JSON object with {"daily", "timing", "config"}. timing.job_s runs
from reading the Parquet to the collected result; timing.session_start_s is
the JVM / SparkSession start-up.
"""
import argparse
import json
import os
import sys
import time

T_PROCESS = time.perf_counter()

from pyspark.sql import SparkSession, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

DAY_MS = 86_400_000
GAP_MS = 1_800_000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parquet", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--shuffle-partitions", default="8")
    ap.add_argument("--rsd", type=float, default=0.05, help="approx_count_distinct relative SD")
    ap.add_argument("--local-dir", default="/tmp")
    a = ap.parse_args()

    t0 = time.perf_counter()
    spark = (SparkSession.builder.master(a.master).appName("engage-spark-peer")
             .config("spark.driver.memory", a.driver_memory)
             .config("spark.sql.shuffle.partitions", a.shuffle_partitions)
             .config("spark.sql.adaptive.enabled", "true")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.local.dir", a.local_dir)
             .config("spark.driver.extraJavaOptions", "-XX:+UseParallelGC")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    t1 = time.perf_counter()

    ev = (spark.read.parquet(a.parquet).select("user_id", "ts")
          .withColumn("day", (F.col("ts") / DAY_MS).cast("long")))  # ts > 0: truncation = floor

    # --- DAU, WAU, MAU
    dau = ev.groupBy("day").agg(F.approx_count_distinct("user_id", a.rsd).alias("dau"))
    ud = ev.select("user_id", "day").distinct()
    w7 = Window.orderBy("day").rangeBetween(-6, 0)
    w30 = Window.orderBy("day").rangeBetween(-29, 0)
    rolling = (ud.withColumn("wau", F.approx_count_distinct("user_id", a.rsd).over(w7))
               .withColumn("mau", F.approx_count_distinct("user_id", a.rsd).over(w30))
               .groupBy("day").agg(F.max("wau").alias("wau"), F.max("mau").alias("mau")))

    # --- sessions
    wu = Window.partitionBy("user_id").orderBy("ts")
    marked = ev.withColumn("prev", F.lag("ts").over(wu)).withColumn(
        "new_session",
        F.when(F.col("prev").isNull() | (F.col("ts") - F.col("prev") > GAP_MS), 1).otherwise(0))
    numbered = marked.withColumn(
        "sn", F.sum("new_session").over(wu.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    sessions = (numbered.groupBy("user_id", "sn")
                .agg(F.min("ts").alias("start_ms"), F.max("ts").alias("end_ms"),
                     F.count(F.lit(1)).alias("actions"))
                .withColumn("duration_ms", F.col("end_ms") - F.col("start_ms"))
                .withColumn("day", (F.col("start_ms") / DAY_MS).cast("long"))
                .cache())

    sess = sessions.groupBy("day").agg(
        F.count(F.lit(1)).alias("sessions"),
        F.approx_count_distinct("user_id", a.rsd).alias("session_users"),
        F.avg("duration_ms").alias("avg_duration_ms"),
        F.avg("actions").alias("actions_per_session"),
        F.percentile_approx("duration_ms", [0.25, 0.75]).alias("dq"),
        F.percentile_approx("actions", [0.25, 0.75]).alias("aq"))
    fences = sess.select(
        "day",
        F.col("dq")[0].cast("double").alias("duration_q1"), F.col("dq")[1].cast("double").alias("duration_q3"),
        F.col("aq")[0].cast("double").alias("actions_q1"), F.col("aq")[1].cast("double").alias("actions_q3"))
    fences = (fences
              .withColumn("duration_lower_fence", F.col("duration_q1") - 1.5 * (F.col("duration_q3") - F.col("duration_q1")))
              .withColumn("duration_upper_fence", F.col("duration_q3") + 1.5 * (F.col("duration_q3") - F.col("duration_q1")))
              .withColumn("actions_lower_fence", F.col("actions_q1") - 1.5 * (F.col("actions_q3") - F.col("actions_q1")))
              .withColumn("actions_upper_fence", F.col("actions_q3") + 1.5 * (F.col("actions_q3") - F.col("actions_q1"))))
    flagged = (sessions.join(fences, "day")
               .withColumn("in_d", F.col("duration_ms").between(F.col("duration_lower_fence"), F.col("duration_upper_fence")))
               .withColumn("in_a", F.col("actions").between(F.col("actions_lower_fence"), F.col("actions_upper_fence"))))
    valid = flagged.groupBy("day").agg(
        F.sum(F.when(F.col("in_d") & F.col("in_a"), 1).otherwise(0)).alias("valid_sessions"),
        F.approx_count_distinct(F.when(F.col("in_d") & F.col("in_a"), F.col("user_id")), a.rsd).alias("valid_users"),
        F.avg(F.when(F.col("in_d") & F.col("in_a"), F.col("duration_ms"))).alias("valid_avg_duration_ms"),
        F.avg(F.when(F.col("in_d") & F.col("in_a"), F.col("actions"))).alias("valid_actions_per_session"),
        F.sum(F.when(~F.col("in_d"), 1).otherwise(0)).alias("duration_outliers"),
        F.sum(F.when(~F.col("in_a"), 1).otherwise(0)).alias("actions_outliers"))

    daily = (dau.join(rolling, "day", "full").join(sess.drop("dq", "aq"), "day", "left")
             .join(fences, "day", "left").join(valid, "day", "left").orderBy("day"))
    rows = daily.collect()
    t2 = time.perf_counter()

    out = []
    import datetime as dt
    for r in rows:
        d = r.asDict()
        day = d.pop("day")
        d["date"] = (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()
        for k in ("sessions", "session_users", "valid_sessions", "valid_users",
                  "duration_outliers", "actions_outliers"):
            if d.get(k) is None and k in ("sessions", "session_users"):
                d[k] = 0
        for k in ("avg_duration_ms", "actions_per_session", "valid_avg_duration_ms",
                  "valid_actions_per_session"):
            if d.get(k) is None:
                d[k] = 0.0
        out.append(d)
    config = {"pyspark": spark.version, "master": a.master, "driver_memory": a.driver_memory,
              "spark.sql.shuffle.partitions": a.shuffle_partitions, "approx_rsd": a.rsd,
              "java": spark.sparkContext._jvm.java.lang.System.getProperty("java.version")}
    spark.stop()
    timing = {"session_start_s": t1 - t0, "job_s": t2 - t1, "python_start_s": t0 - T_PROCESS}
    with open(a.out, "w") as f:
        json.dump({"daily": out, "timing": timing, "config": config}, f)
        f.write("\n")
    print(json.dumps({"timing": timing, "config": config}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
