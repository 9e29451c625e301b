#!/usr/bin/env python3
"""engage benchmark harness; run it through bench/run.sh (which sets up the
Python venv). See bench/README.md.

One run: generate events (engage gen) -> reference results (the oracle's
rules) -> start a real Kafka broker -> create the input topic -> produce ->
run each peer, measuring wall time, CPU seconds and peak RSS of its
processes -> check its DAU/WAU/MAU and sessions against the reference ->
write results JSON + markdown under .cache/bench/results/.
"""
from __future__ import annotations

import argparse
import atexit
import datetime as dt
import gc
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "tools"))
import compare  # noqa: E402
import kafka_util  # noqa: E402
import measure  # noqa: E402
import reference  # noqa: E402

CACHE = os.path.join(ROOT, ".cache", "bench")
PEERS = ["operator", "engage-alo", "engage-eos", "duckdb", "spark", "kstreams"]
DEFAULT_GEN_ARGS = "--zipf 0.7 --sessions-per-day 0.42 --actions-per-session 3"
KSTREAMS_DIR = os.path.join(HERE, "peers", "kstreams")
KSTREAMS_JAR = os.path.join(CACHE, "kstreams-target", "engage-kstreams-peer.jar")
FLUSH_USER = "__bench_flush__"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def try_sh(cmd, **kw) -> Optional[str]:
    try:
        return sh(cmd, **kw).strip()
    except Exception:
        return None


def human(n: int) -> str:
    for unit, div in (("M", 10**6), ("k", 10**3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


# --------------------------------------------------------------------------
# versions and machine

def machine_info() -> dict:
    cpu = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "kernel": platform.release(),
            "os": try_sh(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
            "loadavg_at_start": measure.loadavg()}


def versions(engage_bin: str) -> dict:
    v = {
        "engage_git": try_sh(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
        "engage_binary": engage_bin,
        "gcc": (try_sh(["gcc", "--version"]) or "").split("\n")[0],
        "librdkafka": try_sh(["pkg-config", "--modversion", "rdkafka"]),
        "avro-c": try_sh(["pkg-config", "--modversion", "avro-c"]),
        "rocksdb": try_sh(["dpkg-query", "-W", "-f=${Version}", "librocksdb-dev"]),
        "croaring": try_sh(["dpkg-query", "-W", "-f=${Version}", "libroaring-dev"]),
        "xxhash": try_sh(["dpkg-query", "-W", "-f=${Version}", "libxxhash-dev"]),
        "java": (try_sh(["sh", "-c", "java -version 2>&1"]) or "").split("\n")[0],
        "maven": (try_sh(["sh", "-c", "mvn -v 2>/dev/null"]) or "").split("\n")[0],
        "python": platform.python_version(),
    }
    jars = glob.glob(os.path.join(ROOT, ".cache", "kafka", "lib", "kafka_2.13-*.jar"))
    v["kafka_broker"] = re.sub(r".*kafka_2\.13-(.*)\.jar", r"\1", jars[0]) if jars else None
    try:
        pom = open(os.path.join(KSTREAMS_DIR, "pom.xml")).read()
        v["kafka_streams"] = re.search(r"<kafka.version>(.*?)</kafka.version>", pom).group(1)
    except Exception:
        v["kafka_streams"] = None
    try:
        import duckdb
        v["duckdb"] = duckdb.__version__
    except ImportError:
        v["duckdb"] = None
    try:
        import pyspark
        v["pyspark"] = pyspark.__version__
    except ImportError:
        v["pyspark"] = None
    return v


# --------------------------------------------------------------------------
# builds

def build_engage(build_dir: str, no_build: bool) -> str:
    b = build_dir if os.path.isabs(build_dir) else os.path.join(ROOT, build_dir)
    exe = os.path.join(b, "engage")
    if no_build and os.access(exe, os.X_OK):
        return exe
    log(f"building engage in {b}")
    subprocess.run([os.path.join(ROOT, "scripts", "build.sh"), b], check=True)
    return exe


def build_kstreams(no_build: bool) -> Optional[str]:
    srcs = glob.glob(os.path.join(KSTREAMS_DIR, "src", "**", "*.java"), recursive=True)
    srcs.append(os.path.join(KSTREAMS_DIR, "pom.xml"))
    fresh = os.path.exists(KSTREAMS_JAR) and all(
        os.path.getmtime(s) <= os.path.getmtime(KSTREAMS_JAR) for s in srcs)
    if fresh or (no_build and os.path.exists(KSTREAMS_JAR)):
        return KSTREAMS_JAR
    if not shutil.which("mvn"):
        return None
    log("building the Kafka Streams peer (mvn -q package)")
    subprocess.run(["mvn", "-q", "-f", os.path.join(KSTREAMS_DIR, "pom.xml"), "package"], check=True)
    return KSTREAMS_JAR


def build_operator(engage_bin: str) -> (Optional[str], str):
    """build/bench_operator if the build made one, else gcc against the
    build's libengage_core.a; (None, reason) when that fails."""
    bdir = os.path.dirname(engage_bin)
    exe = os.path.join(bdir, "bench_operator")
    src = os.path.join(HERE, "bench_operator.c")
    if os.access(exe, os.X_OK) and (not os.path.exists(src)
                                    or os.path.getmtime(exe) >= os.path.getmtime(src)):
        return exe, "build dir"
    if not os.path.exists(src):
        return None, "bench/bench_operator.c absent"
    out = os.path.join(CACHE, "bin", "bench_operator")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    common = ["gcc", "-std=c11", "-O2", "-g", "-D_GNU_SOURCE", "-I", os.path.join(ROOT, "src"),
              "-I", os.path.join(bdir, "gen"), src]
    libs = ["-lrdkafka", "-lavro", "-ljansson", "-lrocksdb", "-lroaring", "-lxxhash", "-lm",
            "-lpthread", "-o", out]
    errors = []
    lib = os.path.join(bdir, "libengage_core.a")
    srcs = [c for c in sorted(glob.glob(os.path.join(ROOT, "src", "*.c")))
            if not c.endswith("/main.c")]
    # 1. against the build's core library; 2. the sources themselves (the
    # library may be older than bench_operator.c)
    for how, cmd in (("libengage_core.a", common + [lib] + libs),
                     ("src/*.c", common + srcs + libs)):
        if how == "libengage_core.a" and not os.path.exists(lib):
            errors.append(f"{lib} absent")
            continue
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            return out, "gcc -O2 against " + how
        errors.append(f"gcc against {how}: " + r.stderr.strip()[-300:])
    return None, "could not build bench_operator: " + " | ".join(errors)


# --------------------------------------------------------------------------
# broker

class Broker:
    def __init__(self, port: int, datadir: str):
        self.port, self.datadir = port, datadir
        self.bootstrap = f"127.0.0.1:{port}"
        self.started = False

    def start(self) -> float:
        t0 = time.monotonic()
        subprocess.run([os.path.join(ROOT, "scripts", "kafka", "start.sh"), "--fresh",
                        str(self.port), self.datadir], check=True)
        self.started = True
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.started:
            subprocess.run([os.path.join(ROOT, "scripts", "kafka", "stop.sh"), self.datadir],
                           check=False)
            self.started = False


# --------------------------------------------------------------------------
# steps

def gen_events(engage_bin: str, a, path: str) -> dict:
    args = [engage_bin, "gen", "--users", str(a.users), "--days", str(a.days),
            "--partitions", str(a.partitions), "--seed", str(a.seed)]
    args += shlex.split(a.gen_args)
    if a.events:
        args += ["--max-events", str(a.events)]
    stamp = path + ".args"
    if os.path.exists(path) and os.path.exists(stamp) and open(stamp).read() == " ".join(args[1:]):
        log(f"reusing {path}")
        t = None
    else:
        log("generating events: " + " ".join(args[1:]))
        t0 = time.monotonic()
        subprocess.run(args + ["-o", path], check=True)
        t = time.monotonic() - t0
        with open(stamp, "w") as f:
            f.write(" ".join(args[1:]))
    lines = sum(1 for _ in open(path, "rb"))
    return {"args": args[1:], "lines": lines, "bytes": os.path.getsize(path), "gen_s": t}


def split_by_partition(path: str, outdir: str, partitions: int) -> Optional[List[str]]:
    """One file per partition (file order kept within a partition); None if a
    line has no "partition" (then only one producer keeps the order)."""
    os.makedirs(outdir, exist_ok=True)
    files = [open(os.path.join(outdir, f"p{p}.jsonl"), "wb") for p in range(partitions)]
    pat = re.compile(rb'"partition":(\d+)')
    try:
        with open(path, "rb") as f:
            for line in f:
                m = pat.search(line)
                if not m or int(m.group(1)) >= partitions:
                    return None
                files[int(m.group(1))].write(line)
    finally:
        for fh in files:
            fh.close()
    return [fh.name for fh in files]


def produce(engage_bin: str, broker: Broker, path: str, a, wd: str) -> dict:
    jobs = max(1, min(a.produce_jobs, a.partitions))
    parts = split_by_partition(path, os.path.join(wd, "split"), a.partitions) if jobs > 1 else None
    t0 = time.monotonic()
    if not parts:
        subprocess.run([engage_bin, "produce", "--jsonl", path, "-b", broker.bootstrap],
                       check=True, stderr=subprocess.DEVNULL)
        jobs = 1
    else:
        # up to `jobs` producers at a time, one per partition file
        pending = list(parts)
        running: List[subprocess.Popen] = []
        while pending or running:
            while pending and len(running) < jobs:
                running.append(subprocess.Popen(
                    [engage_bin, "produce", "--jsonl", pending.pop(0), "-b", broker.bootstrap],
                    stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
            for p in list(running):
                if p.poll() is not None:
                    if p.returncode != 0:
                        raise RuntimeError(f"engage produce failed ({p.returncode})")
                    running.remove(p)
            time.sleep(0.05)
    wall = time.monotonic() - t0
    ends = kafka_util.end_offsets(broker.bootstrap, "user-actions")
    return {"jobs": jobs, "wall_s": round(wall, 3), "records": sum(ends.values()),
            "end_offsets": ends}


def du(path: str) -> Optional[int]:
    try:
        return int(sh(["du", "-sb", path]).split()[0])
    except Exception:
        return None


class Harness:
    def __init__(self, a):
        self.a = a
        self.results: Dict[str, dict] = {}
        self.failures: List[str] = []

    def rate(self, n: int, secs: Optional[float]) -> Optional[float]:
        return round(n / secs, 1) if secs else None

    # ---- peers -----------------------------------------------------------
    def run_operator(self, exe: Optional[str], how: str, events: str) -> dict:
        """bench/bench_operator.c (owned elsewhere) on the same event file:
        `bench_operator -j events.jsonl -c cache [--operator-args]`. Its
        output lines "MODE : S s  X M/s  N ns per event (...)" are parsed;
        the whole output is kept."""
        if not exe:
            return {"skipped": how}
        wd = os.path.join(self.wd, "operator")
        os.makedirs(wd, exist_ok=True)
        cmd = [exe, "-j", events, "-c", os.path.join(wd, "records.bin")]
        cmd += shlex.split(self.a.operator_args)
        m = measure.run(cmd, os.path.join(wd, "out.txt"), os.path.join(wd, "err.txt"),
                        self.a.timeout)
        text = open(os.path.join(wd, "out.txt")).read()
        res = {"build": how, "cmd": cmd, "measure": m, "output": text[-3000:]}
        if m["rc"] != 0:
            res["error"] = f"exit {m['rc']}: " + (open(os.path.join(wd, "err.txt")).read()
                                                   + text)[-1500:]
            return res
        modes = {}
        for name, secs, mps, ns in re.findall(
                r"^(\S+)\s*:\s*([\d.]+) s\s+([\d.]+) M/s\s+([\d.]+) ns per", text, re.M):
            modes[name] = {"cpu_s": float(secs), "events_per_s": float(mps) * 1e6,
                           "ns_per_event": float(ns)}
        res["modes"] = modes
        head = modes.get("task") or (max(modes.values(), key=lambda x: x["events_per_s"])
                                     if modes else None)
        res["headline_mode"] = "task" if "task" in modes else (
            max(modes, key=lambda k: modes[k]["events_per_s"]) if modes else None)
        if head:
            res["events_per_s"] = head["events_per_s"]
            res["ns_per_event"] = head["ns_per_event"]
        return res

    def run_engage(self, mode: str, guarantee: Optional[str]) -> dict:
        wd = os.path.join(self.wd, mode)
        shutil.rmtree(wd, ignore_errors=True)
        os.makedirs(wd)
        pre = mode
        xs = {"state.dir": os.path.join(wd, "state"), "group.id": f"bench-{mode}",
              "topic.sessions": f"{pre}-sessions", "topic.daily": f"{pre}-daily-metrics",
              "topic.dead_letters": f"{pre}-dead-letters", "topic.late": f"{pre}-late-events",
              "topic.partials": f"{pre}-day-partials"}
        if guarantee:
            xs["processing.guarantee"] = guarantee
        for kv in self.a.engage_x:
            k, _, v = kv.partition("=")
            xs[k] = v
        cmd = [self.engage, "run", "-b", self.broker.bootstrap, "--until-end"]
        for k, v in xs.items():
            cmd += ["-X", f"{k}={v}"]
        log(f"{mode}: {' '.join(cmd[1:])}")
        m = measure.run(cmd, os.path.join(wd, "stdout.txt"), os.path.join(wd, "stderr.txt"),
                        self.a.timeout)
        res = {"cmd": cmd[1:], "config": xs, "measure": m, "wall_s": m["wall_s"],
               "events_per_s": self.rate(self.records, m["wall_s"]),
               "state_dir_bytes": du(xs["state.dir"])}
        if m["rc"] != 0:
            res["error"] = f"exit {m['rc']}: " + open(os.path.join(wd, "stderr.txt")).read()[-1500:]
            return res
        daily = compare.dump_topic(self.engage, self.broker.bootstrap, xs["topic.daily"], "daily",
                                   os.path.join(wd, "daily.jsonl"))
        sessions = compare.dump_topic(self.engage, self.broker.bootstrap, xs["topic.sessions"],
                                      "session", os.path.join(wd, "sessions.jsonl"), lazy=True)
        res["check"] = compare.compare(self.ref, {"daily": daily, "sessions": sessions})
        return res

    def ensure_parquet(self) -> dict:
        """CSV of counted events -> Parquet (DuckDB COPY), once per run."""
        if getattr(self, "parquet", None):
            return self.parquet
        wd = os.path.join(self.wd, "duckdb")
        os.makedirs(wd, exist_ok=True)
        script = os.path.join(HERE, "peers", "duckdb", "duckdb_peer.py")
        pq = os.path.join(wd, "events.parquet")
        ex = measure.run([sys.executable, script, "export", "--csv", self.counted_csv,
                          "--parquet", pq], os.path.join(wd, "export.out"),
                         os.path.join(wd, "export.err"), self.a.timeout)
        if ex["rc"] != 0:
            raise RuntimeError("Parquet export failed: "
                               + open(os.path.join(wd, "export.err")).read()[-1500:])
        info = json.loads(open(os.path.join(wd, "export.out")).read().strip().splitlines()[-1])
        self.parquet = {"path": pq, "measure": ex, **info}
        return self.parquet

    def run_duckdb(self) -> dict:
        wd = os.path.join(self.wd, "duckdb")
        py = sys.executable
        script = os.path.join(HERE, "peers", "duckdb", "duckdb_peer.py")
        export = self.ensure_parquet()
        pq = export["path"]
        ex_info = export
        out = os.path.join(wd, "result.json")
        m = measure.run([py, script, "sql", "--parquet", pq, "--out", out],
                        os.path.join(wd, "sql.out"), os.path.join(wd, "sql.err"), self.a.timeout)
        if m["rc"] != 0:
            return {"error": "sql failed: " + open(os.path.join(wd, "sql.err")).read()[-1500:]}
        r = json.load(open(out))
        # the sessions, for checking only (untimed, separate process)
        spq = os.path.join(wd, "sessions.parquet")
        subprocess.run([py, script, "sql", "--parquet", pq, "--sessions-out", spq],
                       check=True, stdout=subprocess.DEVNULL)
        def sessions():
            import duckdb
            cur = duckdb.connect().execute(
                f"SELECT user_id, start_ms, end_ms, duration_ms, actions, date "
                f"FROM read_parquet('{spq}')")
            while True:
                rows = cur.fetchmany(100_000)
                if not rows:
                    return
                for row in rows:
                    yield dict(zip(compare.SESSION_FIELDS, row))
        sql_s = r["timing"]["sql_s"]
        return {"export": ex_info, "measure": m, "timing": r["timing"],
                "config": r["config"], "wall_s": round(sql_s, 3),
                "events_per_s": self.rate(self.records, sql_s),
                "input_rows": ex_info["rows"],
                "check": compare.compare(self.ref, {"daily": r["daily"], "sessions": sessions},
                                         check_iqr=True),
                "note": "wall = SQL time in the process (Parquet -> results), "
                        "CPU/RSS = the whole SQL process; input = the counted events only"}

    def run_spark(self) -> dict:
        wd = os.path.join(self.wd, "spark")
        pq = self.ensure_parquet()["path"]
        os.makedirs(wd, exist_ok=True)
        out = os.path.join(wd, "result.json")
        tmp = os.path.join(wd, "tmp")
        os.makedirs(tmp, exist_ok=True)
        cmd = [sys.executable, os.path.join(HERE, "peers", "spark", "spark_peer.py"),
               "--parquet", pq, "--out", out, "--driver-memory", self.a.spark_driver_memory,
               "--local-dir", tmp]
        m = measure.run(cmd, os.path.join(wd, "stdout.txt"), os.path.join(wd, "stderr.txt"),
                        self.a.timeout)
        shutil.rmtree(tmp, ignore_errors=True)
        if m["rc"] != 0:
            return {"measure": m, "error": open(os.path.join(wd, "stderr.txt")).read()[-2000:]}
        r = json.load(open(out))
        chk = compare.compare(self.ref, {"daily": r["daily"], "sessions": None},
                              exact_counts=False, check_iqr=True)
        t = r["timing"]
        wall = t["session_start_s"] + t["job_s"]
        return {"measure": m, "timing": t, "config": r["config"], "wall_s": round(wall, 3),
                "parquet_export_s": self.parquet["timing"]["export_s"],
                "events_per_s": self.rate(self.records, wall), "check": chk,
                "note": "wall = SparkSession start + job (Parquet -> collected results); "
                        "approx_count_distinct for DAU/WAU/MAU/session users, "
                        "percentile_approx for the IQR"}

    def run_kstreams(self, jar: Optional[str]) -> dict:
        if not jar:
            return {"skipped": "no jar (mvn missing?)"}
        wd = os.path.join(self.wd, "kstreams")
        shutil.rmtree(wd, ignore_errors=True)
        os.makedirs(wd)
        # End-of-input markers: Kafka Streams has no bounded mode, and session
        # windows close only when stream time passes end + gap + grace. One
        # record per partition, a day after the newest event, advances it.
        mx = self.ref["max_ts"]
        flush = os.path.join(wd, "flush.jsonl")
        with open(flush, "w") as f:
            for p in range(self.a.partitions):
                f.write(json.dumps({"event_id": f"bench-flush-{p}", "user_id": FLUSH_USER,
                                    "timestamp": mx + 86_400_000, "action": "flush",
                                    "partition": p}) + "\n")
        subprocess.run([self.engage, "produce", "--jsonl", flush, "-b", self.broker.bootstrap],
                       check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        app_id = f"ks-bench-{int(time.time())}"
        cmd = ["java"] + shlex.split(self.a.kstreams_jvm) + [
               "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
               "-Dorg.slf4j.simpleLogger.showDateTime=true",
               "-jar", jar, "--bootstrap", self.broker.bootstrap, "--app-id", app_id,
               "--state-dir", os.path.join(wd, "state"), "--stats", os.path.join(wd, "stats.json"),
               "--flush-user", FLUSH_USER, "--timeout-s", str(int(self.a.timeout))]
        for kv in self.a.kstreams_prop:
            cmd += ["--prop", kv]
        for kv in self.a.kstreams_opt:
            k, _, v = kv.partition("=")
            cmd += [f"--{k}", v]
        log("kstreams: " + " ".join(cmd))
        m = measure.run(cmd, os.path.join(wd, "stdout.txt"), os.path.join(wd, "stderr.txt"),
                        self.a.timeout + 120)
        try:
            stats = json.load(open(os.path.join(wd, "stats.json")))
        except Exception:
            stats = None
        res = {"cmd": cmd, "measure": m, "stats": stats, "state_dir_bytes": du(os.path.join(wd, "state"))}
        if m["rc"] != 0 or not stats or stats.get("status") != "done":
            res["error"] = f"exit {m['rc']}: " + open(os.path.join(wd, "stderr.txt")).read()[-2000:]
            return res
        res["wall_s"] = stats["wall_s"]
        res["events_per_s"] = self.rate(self.records, stats["wall_s"])
        daily = compare.last_per_date(compare.dump_topic(
            self.engage, self.broker.bootstrap, "ks-daily-metrics", "daily",
            os.path.join(wd, "daily.jsonl")))
        sessions = compare.dump_topic(self.engage, self.broker.bootstrap, "ks-sessions", "session",
                                      os.path.join(wd, "sessions.jsonl"), lazy=True)
        res["check"] = compare.compare(self.ref, {"daily": daily, "sessions": sessions})
        res["note"] = ("wall = JVM start to the last change of output/committed offsets "
                       f"(quiet period of {stats.get('quiet_ms')} ms after it not counted); "
                       f"input + {self.a.partitions} end-of-input markers")
        return res

    # ---- the run -----------------------------------------------------------
    def run(self) -> int:
        a = self.a
        scale = a.label or (f"{human(a.users)}u-{a.days}d-{a.partitions}p"
                            + (f"-{human(a.events)}" if a.events else ""))
        self.wd = os.path.abspath(a.workdir or os.path.join(CACHE, "runs", scale))
        if a.only and not a.explicit_label:
            scale += "-" + "+".join(a.only)  # partial runs do not overwrite full results
        self.scale = scale
        os.makedirs(self.wd, exist_ok=True)
        started = dt.datetime.now(dt.timezone.utc)
        # fixed order: kstreams appends end-of-input markers to the topic, so it runs last
        want = [p for p in PEERS if p in (a.only or PEERS) and p not in a.skip]
        self.engage = build_engage(a.engage_build, a.no_build)
        h = subprocess.run([self.engage, "run", "--help"], capture_output=True, text=True)
        help_text = h.stdout + h.stderr
        has_eos = "processing.guarantee" in help_text
        jar = None
        if "kstreams" in want:
            try:
                jar = build_kstreams(a.no_build)
            except subprocess.CalledProcessError as e:
                log(f"Kafka Streams peer did not build ({e}); it will be skipped")
        op_exe, op_how = build_operator(self.engage) if "operator" in want else (None, "")

        report = {"started_utc": started.isoformat(timespec="seconds"), "scale": scale,
                  "argv": sys.argv[1:], "args": vars(a), "machine": machine_info(), "versions": versions(self.engage),
                  "workdir": self.wd}
        events = os.path.join(self.wd, "events.jsonl")
        report["gen"] = gen_events(self.engage, a, events)
        self.records = report["gen"]["lines"]

        log(f"reference results ({self.records} lines)")
        params = reference.oracle.Params(partitions=a.partitions)
        self.counted_csv = os.path.join(self.wd, "counted.csv")
        t0 = time.monotonic()
        ref = reference.compute(events, params, self.counted_csv)
        ref["max_ts"] = max(ts for ts in (s["end_ms"] for s in ref["sessions"]))
        report["reference"] = {"stats": ref["stats"], "secs": round(time.monotonic() - t0, 1),
                               "method": "oracle rules, streaming (bench/tools/reference.py)"}
        if self.records <= a.oracle_max_events:
            t0 = time.monotonic()
            d = reference.check_against_full_oracle(events, params, ref)
            report["reference"]["full_oracle_check"] = {
                "match": not d, "diffs": d[:20], "secs": round(time.monotonic() - t0, 1)}
            if d:
                self.failures.append("reference differs from the full oracle")
        else:
            report["reference"]["full_oracle_check"] = {
                "skipped": f"{self.records} lines > --oracle-max-events {a.oracle_max_events}"}
        ref.pop("outcomes")
        report["reference_daily"] = ref["daily"]
        if len(ref["sessions"]) > a.session_diff_max:
            ref["sessions_fingerprint"] = compare.session_fingerprint(ref["sessions"])
            ref["sessions"] = None  # keep the harness small while the peers run
        gc.collect()
        self.ref = ref

        self.broker = Broker(a.port, os.path.join(self.wd, "kafka"))
        if not a.keep_broker:
            atexit.register(self.broker.stop)
        try:
            report["broker"] = {"start_s": round(self.broker.start(), 1),
                                "bootstrap": self.broker.bootstrap}
            kafka_util.create_topic(self.broker.bootstrap, "user-actions", a.partitions,
                                    {"retention.ms": "-1", "retention.bytes": "-1"})
            log(f"producing {self.records} records ({a.produce_jobs} producers)")
            report["produce"] = produce(self.engage, self.broker, events, a, self.wd)
            report["produce"]["records_per_s"] = self.rate(report["produce"]["records"],
                                                           report["produce"]["wall_s"])
            if report["produce"]["records"] != self.records:
                raise RuntimeError(f"topic holds {report['produce']['records']} records, "
                                   f"expected {self.records}")
            peers = {}
            for name in want:
                log(f"peer {name}")
                t0 = time.monotonic()
                try:
                    if name == "operator":
                        r = self.run_operator(op_exe, op_how, events)
                    elif name == "engage-alo":
                        r = self.run_engage("engage-alo", "at_least_once" if has_eos else None)
                    elif name == "engage-eos":
                        r = (self.run_engage("engage-eos", "exactly_once") if has_eos else
                             {"skipped": "this engage has no processing.guarantee"})
                    elif name == "duckdb":
                        r = self.run_duckdb()
                    elif name == "spark":
                        r = self.run_spark()
                    elif name == "kstreams":
                        r = self.run_kstreams(jar)
                    else:
                        r = {"skipped": "unknown peer"}
                except Exception as e:  # a peer failing must not lose the others
                    r = {"error": f"{type(e).__name__}: {e}"}
                r["harness_s"] = round(time.monotonic() - t0, 1)
                peers[name] = r
                if r.get("error"):
                    self.failures.append(f"{name}: failed")
                    log(f"{name} FAILED: {r['error'][-600:]}")
                elif r.get("check") and not r["check"]["match"]:
                    self.failures.append(f"{name}: results differ from the reference")
                    log(f"{name}: {r['check']['n_diffs']} difference(s): {r['check']['diffs'][:3]}")
                elif name == "duckdb" and r.get("check", {}).get("iqr", {}).get("match") is False:
                    self.failures.append("duckdb: IQR fields differ from the reference")
                if not r.get("skipped"):
                    log(f"{name}: " + summary_line(r))
                report["peers"] = peers
                self.write(report)
        finally:
            if not a.keep_broker:
                self.broker.stop()
            measure.kill_all()
        report["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        report["machine"]["loadavg_at_end"] = measure.loadavg()
        report["failures"] = self.failures
        paths = self.write(report)
        print(open(paths[1]).read())
        log(f"results: {paths[0]} and {paths[1]}")
        if self.failures:
            log("FAILURES: " + "; ".join(self.failures))
            return 1
        return 0

    def write(self, report: dict):
        rd = os.path.abspath(self.a.results_dir)
        os.makedirs(rd, exist_ok=True)
        base = os.path.join(rd, f"{report['started_utc'][:10]}-{self.scale}")
        with open(base + ".json", "w") as f:
            json.dump(report, f, indent=1, default=str)
            f.write("\n")
        with open(base + ".md", "w") as f:
            f.write(markdown(report))
        return base + ".json", base + ".md"


def summary_line(r: dict) -> str:
    m = r.get("measure") or {}
    parts = []
    if r.get("wall_s") is not None:
        parts.append(f"wall {r['wall_s']:.2f} s")
    if r.get("events_per_s"):
        parts.append(f"{r['events_per_s']:,.0f} ev/s")
    if m:
        parts.append(f"CPU {m.get('cpu_s')} s, peak RSS {m.get('peak_rss_mb')} MB")
    if r.get("check"):
        parts.append("results " + ("match" if r["check"]["match"] else "DIFFER"))
    return ", ".join(parts)


# --------------------------------------------------------------------------
# markdown

def _fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        if x >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def correctness(r: dict) -> str:
    c = r.get("check")
    if not c:
        return "–"
    if "approx_error" in c and c.get("match") and any(
            v["max_rel_err"] > 0 for k, v in c["approx_error"].items()
            if k in ("dau", "wau", "mau", "session_users")):
        ae = c["approx_error"]
        return ("approx: max rel. err " + ", ".join(
            f"{k} {ae[k]['max_rel_err'] * 100:.1f}%" for k in ("dau", "wau", "mau", "session_users")
            if k in ae) + "; mean " + ", ".join(
            f"{k} {ae[k]['mean_rel_err'] * 100:.1f}%" for k in ("dau", "wau", "mau") if k in ae))
    if c["match"]:
        s = "exact"
        if c.get("sessions"):
            s += f" ({c['sessions']['got']:,} sessions)"
        if c.get("iqr") is not None:
            s += ", IQR " + ("exact" if c["iqr"]["match"] else f"{c['iqr']['n_diffs']} diffs")
        return s
    return f"DIFFERS: {c['n_diffs']} diffs, e.g. {c['diffs'][:2]}"


def targets(rep: dict) -> List[str]:
    """The issue's goals, evaluated on this run (goals, not pass/fail)."""
    p = rep.get("peers", {})
    eng = p.get("engage-eos") if p.get("engage-eos", {}).get("wall_s") else None
    eng_any = eng or (p.get("engage-alo") if p.get("engage-alo", {}).get("wall_s") else None)
    lines = []

    def add(goal, value, ok):
        lines.append(f"| {goal} | {value} | {'yes' if ok else 'no'} |")

    op = p.get("operator", {})
    if op.get("modes"):
        best = max(op["modes"].items(), key=lambda kv: kv[1]["events_per_s"])
        add("operator ≥ 5M events/s on one core",
            f"best mode {best[0]}: {best[1]['events_per_s'] / 1e6:.2f} M/s", best[1]["events_per_s"] >= 5e6)
    ks = p.get("kstreams", {})
    if eng and ks.get("wall_s"):
        r = eng["events_per_s"] / ks["events_per_s"]
        add("exactly-once ≥ 10× Kafka Streams events/s", f"{r:.1f}×", r >= 10)
        m = ks["measure"]["peak_rss_mb"] / max(eng["measure"]["peak_rss_mb"], 1e-9)
        add("… at ≤ 1/5 of its peak RSS", f"Kafka Streams {m:.1f}× engage's", m >= 5)
    dd = p.get("duckdb", {})
    if eng_any and dd.get("wall_s"):
        r = eng_any["wall_s"] / dd["wall_s"]
        add("bounded run ≤ 1.5× DuckDB's time", f"{r:.2f}×", r <= 1.5)
    sp = p.get("spark", {})
    if eng_any and sp.get("wall_s"):
        r = sp["wall_s"] / eng_any["wall_s"]
        add("≥ 20× faster than Spark", f"{r:.1f}×", r >= 20)
    if eng_any:
        rss = eng_any["measure"]["peak_rss_mb"]
        add("peak RSS < 256 MB (at 1M users)", f"{rss:.0f} MB", rss < 256)
        ud = sum(d["dau"] for d in rep.get("reference_daily", []))
        if ud and eng_any.get("state_dir_bytes"):
            add("daily bitmaps ≤ 2.5 bytes per active user-day on disk",
                f"whole state dir {eng_any['state_dir_bytes'] / ud:.2f} B per user-day "
                f"({ud:,} user-days; an upper bound)", eng_any["state_dir_bytes"] / ud <= 2.5)
    if not lines:
        return []
    return ["", "Issue #5 goals on this run:", "", "| goal | this run | met |", "|---|---|---|"] + lines


def markdown(rep: dict) -> str:
    peers = rep.get("peers", {})
    mi, v = rep["machine"], rep["versions"]
    g = rep.get("gen", {})
    out = [f"# engage benchmark — {rep['scale']} — {rep['started_utc']}", ""]
    out.append(f"Input: {g.get('lines', 0):,} records (`engage {' '.join(g.get('args', []))}`), "
               f"reference: {rep.get('reference', {}).get('stats')}.")
    out.append(f"Machine: {mi.get('cpu')}, {mi.get('cores')} cores, {mi.get('mem_gib')} GiB, "
               f"{mi.get('os')}, kernel {mi.get('kernel')}; load average at start "
               f"{mi.get('loadavg_at_start')}, at end {mi.get('loadavg_at_end')}.")
    pr = rep.get("produce")
    if pr:
        out.append(f"Produce: {pr['records']:,} records in {pr['wall_s']} s with {pr['jobs']} "
                   f"parallel `engage produce` ({_fmt(pr.get('records_per_s'))} records/s); "
                   f"broker start {rep.get('broker', {}).get('start_s')} s.")
    out += ["", "| peer | wall s | events/s | CPU s | peak RSS MB | results vs reference | notes |",
            "|---|---:|---:|---:|---:|---|---|"]
    for name, r in peers.items():
        if r.get("skipped"):
            out.append(f"| {name} | | | | | skipped | {r['skipped']} |")
            continue
        if r.get("error"):
            out.append(f"| {name} | | | | | FAILED | {r['error'][-200:]!r} |")
            continue
        m = r.get("measure", {})
        if name == "operator":
            modes = r.get("modes", {})
            out.append(f"| operator ({r.get('headline_mode')}) | {_fmt(m.get('wall_s'), 2)} | "
                       f"{_fmt(r.get('events_per_s'))} | {_fmt(m.get('cpu_s'), 2)} | "
                       f"{_fmt(m.get('peak_rss_mb'))} | – | one core, CPU time, records in memory; "
                       + "; ".join(f"{k} {v['events_per_s'] / 1e6:.2f} M/s ({v['ns_per_event']:.0f} ns)"
                                   for k, v in modes.items()) + " |")
            continue
        note = r.get("note", "")
        if name == "duckdb":
            note = (f"SQL only; export CSV→Parquet {r['export']['timing']['export_s']:.1f} s; "
                    f"sessions {r['timing']['sessions_s']:.1f} s, daily {r['timing']['daily_s']:.1f} s")
        elif name == "spark":
            note = (f"session start {r['timing']['session_start_s']:.1f} s + job "
                    f"{r['timing']['job_s']:.1f} s")
        elif name.startswith("engage"):
            note = f"state dir {_fmt((r.get('state_dir_bytes') or 0) / 2**20)} MiB"
        elif name == "kstreams":
            st = r.get("stats") or {}
            note = (f"process wall {m.get('wall_s')} s incl. {st.get('quiet_ms', 0) / 1000:.0f} s "
                    f"quiet period; state dir {_fmt((r.get('state_dir_bytes') or 0) / 2**20)} MiB")
        out.append(f"| {name} | {_fmt(r.get('wall_s'), 2)} | {_fmt(r.get('events_per_s'))} | "
                   f"{_fmt(m.get('cpu_s'), 2)} | {_fmt(m.get('peak_rss_mb'))} | {correctness(r)} | {note} |")

    # ratios
    eng = None
    for k in ("engage-eos", "engage-alo"):
        if peers.get(k, {}).get("wall_s"):
            eng = k
            break
    if eng:
        e = peers[eng]
        out += ["", f"Ratios to {eng} (peer / engage; above 1 = engage better):", ""]
        for k in ("engage-alo", "engage-eos", "kstreams", "duckdb", "spark"):
            r = peers.get(k, {})
            if k == eng or not r.get("wall_s"):
                continue
            wr = r["wall_s"] / e["wall_s"]
            rss = (r.get("measure", {}).get("peak_rss_mb") or 0) / max(
                e["measure"]["peak_rss_mb"] or 0, 1e-9)
            cpu = (r.get("measure", {}).get("cpu_s") or 0) / max(e["measure"]["cpu_s"], 1e-9)
            out.append(f"- {k}: wall time {wr:.2f}× engage's, CPU {cpu:.2f}×, peak RSS {rss:.2f}×")
    out += targets(rep)
    out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in v.items() if v and k != "engage_binary"),
            ""]
    for name, r in peers.items():
        c = r.get("check")
        if c and (not c["match"] or (c.get("iqr") and not c["iqr"]["match"])):
            out.append(f"- {name}: {c['n_diffs']} differences; first: {c['diffs'][:5]}"
                       + (f"; IQR {c['iqr']['n_diffs']} diffs, max rel err "
                          f"{ {k: round(x, 4) for k, x in c['iqr']['max_rel_err'].items() if x} }"
                          if c.get("iqr") and not c["iqr"]["match"] else ""))
    if rep.get("failures"):
        out += ["", "Failures: " + "; ".join(rep["failures"])]
    out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=0,
                    help="cap on generated records (engage gen --max-events; default: no cap; "
                         "the default scale gives about 10.45M records from 0.92M active users)")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=35)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--gen-args", default=DEFAULT_GEN_ARGS,
                    help=f"extra engage gen options (default: {DEFAULT_GEN_ARGS})")
    ap.add_argument("--only", nargs="+", choices=PEERS, help="run only these peers")
    ap.add_argument("--skip", nargs="+", choices=PEERS, default=[])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run: 2000 users, about 21k records, every peer")
    ap.add_argument("--port", type=int, default=19392)
    ap.add_argument("--label", help="scale label of the result files (default from the scale)")
    ap.add_argument("--workdir", help="default .cache/bench/runs/<scale>")
    ap.add_argument("--results-dir", default=os.path.join(CACHE, "results"))
    ap.add_argument("--engage-build", default="build", help="engage build directory (default build)")
    ap.add_argument("--no-build", action="store_true", help="use existing binaries and jar as they are")
    ap.add_argument("--engage-x", action="append", default=[], metavar="K=V",
                    help="extra -X for every engage run (repeatable)")
    ap.add_argument("--kstreams-prop", action="append", default=[], metavar="K=V",
                    help="extra Kafka Streams / client property (repeatable)")
    ap.add_argument("--kstreams-opt", action="append", default=[], metavar="K=V",
                    help="Kafka Streams peer option, e.g. commit-ms=1000 (repeatable)")
    ap.add_argument("--kstreams-jvm", default="-Xmx1g",
                    help="JVM options of the Kafka Streams peer (default -Xmx1g; write --kstreams-jvm=\"...\")")
    ap.add_argument("--spark-driver-memory", default="4g")
    ap.add_argument("--operator-args", default="",
                    help="extra bench_operator options (e.g. \"-m core,pipe,task -r 3\")")
    ap.add_argument("--produce-jobs", type=int, default=os.cpu_count() or 1,
                    help="parallel engage produce processes, one per partition file")
    ap.add_argument("--oracle-max-events", type=int, default=1_000_000,
                    help="also run the unmodified oracle when the input is at most this big")
    ap.add_argument("--session-diff-max", type=int, default=compare.FULL_SESSION_DIFF_MAX,
                    help="above this many sessions compare them by fingerprint, not one by one")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per peer")
    ap.add_argument("--keep-broker", action="store_true")
    a = ap.parse_args(argv)
    a.explicit_label = bool(a.label)
    if a.smoke:
        a.users, a.days = 2000, 35
        a.label = a.label or "smoke"
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(130))
    atexit.register(measure.kill_all)
    return Harness(a).run()


if __name__ == "__main__":
    sys.exit(main())
