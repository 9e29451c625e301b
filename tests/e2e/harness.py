"""End-to-end harness: one engage pipeline (topics, config, state dir) on a
real Kafka broker, and readers for its output topics.

Every output is read twice: through `engage dump` and independently with
confluent_kafka (read_committed) + fastavro, and both are turned into the
structure oracle.compare() takes.
"""
from __future__ import annotations

import base64
import collections
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from typing import Dict, List, Optional, Tuple

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
import oracle  # noqa: E402

SCHEMA_IDS = {"session": 101, "daily": 102}  # output.schema.id.* defaults (config.h)
DL_HEADERS = ("engage.reason", "engage.error", "engage.source.topic",
              "engage.source.partition", "engage.source.offset")
RUN_TIMEOUT = 300


def _b64(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else base64.b64encode(b).decode("ascii")


def _strip_logical(x):
    if isinstance(x, dict):
        return {k: _strip_logical(v) for k, v in x.items() if k != "logicalType"}
    if isinstance(x, list):
        return [_strip_logical(v) for v in x]
    return x


_SCHEMAS = {}


def out_schema(kind: str):
    if kind not in _SCHEMAS:
        name = {"session": "session.avsc", "daily": "daily_metrics.avsc"}[kind]
        with open(os.path.join(ROOT, "schemas", name)) as f:
            _SCHEMAS[kind] = fastavro.parse_schema(_strip_logical(json.load(f)),
                                                   named_schemas={})
    return _SCHEMAS[kind]


def decode_output(kind: str, value: bytes) -> dict:
    """Decodes a Confluent-framed Session / DailyMetrics value; asserts the
    framing, the schema id and that the datum is consumed exactly."""
    assert value is not None and len(value) >= 5, f"{kind} value too short: {value!r}"
    assert value[0] == 0, f"{kind} value magic byte {value[0]}"
    sid = struct.unpack(">i", value[1:5])[0]
    assert sid == SCHEMA_IDS[kind], f"{kind} schema id {sid}, want {SCHEMA_IDS[kind]}"
    fo = io.BytesIO(value[5:])
    rec = fastavro.schemaless_reader(fo, out_schema(kind), out_schema(kind))
    assert fo.tell() == len(value) - 5, f"{kind} value has trailing bytes: {value!r}"
    return rec


# --------------------------------------------------------------------------
# processes

def run_cmd(args, log_path, timeout=RUN_TIMEOUT, stdout_path=None):
    """Runs a command from the repository root; fails with the log tail."""
    with open(log_path, "ab") as log:
        out = open(stdout_path, "wb") if stdout_path else log
        try:
            t0 = time.monotonic()
            log.write(f"\n$ {' '.join(map(str, args))}\n".encode())
            log.flush()
            p = subprocess.run([str(a) for a in args], cwd=ROOT, stdout=out, stderr=log,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"timed out after {timeout}s: {' '.join(map(str, args))}\n"
                                 + tail(log_path))
        finally:
            if stdout_path:
                out.close()
    if p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}: {' '.join(map(str, args))}\n"
                             + tail(log_path))
    return time.monotonic() - t0


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "--- " + str(path) + " (tail) ---\n" + "\n".join(lines[-n:])


# --------------------------------------------------------------------------
# the pipeline

class Pipeline:
    """One engage deployment: input topic, output topics, group, state dir."""

    def __init__(self, engage_bin: str, bootstrap: str, workdir, tag: str,
                 input_topic: Optional[str] = None, extra_conf: Optional[dict] = None):
        self.bin = str(engage_bin)
        self.bootstrap = bootstrap
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        uid = uuid.uuid4().hex[:10]
        base = f"e2e-{tag}-{uid}"
        self.topics = {
            "input": input_topic or f"{base}-in",
            "sessions": f"{base}-sessions",
            "daily": f"{base}-daily",
            "dead_letters": f"{base}-dead",
            "late": f"{base}-late",
            "partials": f"{base}-partials",
        }
        self.group = f"{base}-group"
        self.state_dir = os.path.join(self.dir, "state")
        self.conf_path = os.path.join(self.dir, "engage.conf")
        self.log_path = os.path.join(self.dir, "engage.log")
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": self.group,
            "topic.input": self.topics["input"],
            "topic.sessions": self.topics["sessions"],
            "topic.daily": self.topics["daily"],
            "topic.dead_letters": self.topics["dead_letters"],
            "topic.late": self.topics["late"],
            "topic.partials": self.topics["partials"],
            "state.dir": self.state_dir,
            "input.schemas": "1=schemas/user_action.avsc,2=tests/fixtures/user_action_v2.avsc",
        }
        conf.update(extra_conf or {})
        self.conf = conf
        with open(self.conf_path, "w") as f:
            for k, v in conf.items():
                f.write(f"{k}={v}\n")

    # ---- topics
    def create_topics(self, with_input=True):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        specs = [(t, 1 if k == "partials" else 4) for k, t in self.topics.items()
                 if with_input or k != "input"]
        futs = admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1)
                                    for t, n in specs], operation_timeout=30)
        for t, f in futs.items():
            f.result(timeout=60)
        wait_topics(admin, [t for t, _ in specs])

    def delete_topics(self, with_input=True):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        ts = [t for k, t in self.topics.items() if with_input or k != "input"]
        for f in admin.delete_topics(ts, operation_timeout=30).values():
            try:
                f.result(timeout=60)
            except Exception:
                pass

    # ---- engage commands
    def produce(self, jsonl):
        return run_cmd([self.bin, "produce", "--jsonl", jsonl, "-c", self.conf_path],
                       self.log_path)

    def run(self, timeout=RUN_TIMEOUT):
        """engage run --until-end; returns the wall time."""
        return run_cmd([self.bin, "run", "-c", self.conf_path, "--until-end"], self.log_path,
                       timeout=timeout)

    def start_run(self) -> subprocess.Popen:
        log = open(self.log_path, "ab")
        log.write(f"\n$ {self.bin} run -c {self.conf_path} --until-end  (background)\n".encode())
        log.flush()
        p = subprocess.Popen([self.bin, "run", "-c", self.conf_path, "--until-end"], cwd=ROOT,
                             stdout=log, stderr=log)
        log.close()
        return p

    def dump(self, key: str) -> List[dict]:
        topic = self.topics[key]
        out = os.path.join(self.dir, f"dump-{key}.jsonl")
        run_cmd([self.bin, "dump", topic, "-c", self.conf_path], self.log_path, timeout=120,
                stdout_path=out)
        recs = []
        with open(out, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        recs.append(json.loads(line))
                    except ValueError as e:
                        raise AssertionError(f"engage dump {topic}: line {n} is not JSON: "
                                             f"{e}: {line[:200]!r}")
        return recs

    # ---- independent reader
    def read_raw(self, key: str) -> List["RawRec"]:
        return read_topic(self.bootstrap, self.topics[key])

    # ---- results in oracle.compare() form
    def actual_from_raw(self, dedupe=False) -> Tuple[dict, Dict[str, List["RawRec"]]]:
        raw = {k: self.read_raw(k) for k in ("sessions", "daily", "dead_letters", "late")}
        if dedupe:
            raw = {k: dedupe_identical(v) for k, v in raw.items()}
        return raw_to_actual(raw, self.topics["input"]), raw

    def actual_from_dump(self) -> dict:
        d = {k: self.dump(k) for k in ("sessions", "daily", "dead_letters", "late")}
        return dump_to_actual(d, self.topics, self.topics["input"])


def wait_topics(admin, topics, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=10)
        missing = [t for t in topics if t not in md.topics or md.topics[t].error is not None
                   or any(p.leader < 0 for p in md.topics[t].partitions.values())]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topics not ready: {missing}")
        time.sleep(0.2)


RawRec = collections.namedtuple("RawRec", "partition offset key value headers timestamp")


def read_topic(bootstrap: str, topic: str, timeout=120) -> List[RawRec]:
    """Reads every committed record of topic (read_committed) to its end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-reader-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=30)
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None:
            raise AssertionError(f"topic {topic} missing: {tmd.error if tmd else ''}")
        parts = sorted(tmd.partitions)
        pending = set()
        tps = []
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            tps.append(TopicPartition(topic, p, lo if lo >= 0 else 0))
            if hi > max(lo, 0):
                pending.add(p)
        c.assign(tps)
        out = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}: partitions {sorted(pending)} did not "
                                     "reach their end (open transaction?)")
            for m in c.consume(num_messages=10000, timeout=1.0):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise KafkaException(m.error())
                hdrs = {}
                for k, v in (m.headers() or []):
                    hdrs[k] = v
                out.append(RawRec(m.partition(), m.offset(), m.key(), m.value(), hdrs,
                                  m.timestamp()[1]))
        return out
    finally:
        c.close()


def dedupe_identical(recs: List[RawRec]) -> List[RawRec]:
    """Drops records whose (key, value, headers) equal an earlier one's."""
    seen = set()
    out = []
    for r in recs:
        k = (r.key, r.value, tuple(sorted((h, v or b"") for h, v in r.headers.items())))
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _hdr(h: dict, name: str) -> Optional[str]:
    v = h.get(name)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def _dl_entry(headers: dict, key: Optional[bytes], value: Optional[bytes], input_topic: str,
              late: bool, where: str) -> dict:
    missing = [h for h in DL_HEADERS if _hdr(headers, h) is None]
    assert not missing, f"{where}: headers {missing} missing (have {sorted(headers)})"
    assert _hdr(headers, "engage.source.topic") == input_topic, \
        f"{where}: engage.source.topic {_hdr(headers, 'engage.source.topic')!r}"
    if late:
        assert _hdr(headers, "engage.reason") == "late", \
            f"{where}: engage.reason {_hdr(headers, 'engage.reason')!r}, want 'late'"
    e = {"partition": int(_hdr(headers, "engage.source.partition")),
         "offset": int(_hdr(headers, "engage.source.offset")),
         "key_b64": _b64(key), "value_b64": _b64(value)}
    if not late:
        e["reason"] = _hdr(headers, "engage.reason")
    return e


def raw_to_actual(raw: Dict[str, List[RawRec]], input_topic: str) -> dict:
    sessions = []
    for r in raw["sessions"]:
        s = decode_output("session", r.value)
        sessions.append(s)
    daily = [decode_output("daily", r.value) for r in raw["daily"]]
    dead = [_dl_entry(r.headers, r.key, r.value, input_topic, False,
                      f"dead letter p{r.partition}@{r.offset}") for r in raw["dead_letters"]]
    late = [_dl_entry(r.headers, r.key, r.value, input_topic, True,
                      f"late record p{r.partition}@{r.offset}") for r in raw["late"]]
    return {"sessions": sessions, "daily": daily, "dead_letters": dead, "late": late}


def _dump_key(rec: dict) -> Optional[bytes]:
    if rec.get("key_b64") is not None:
        return base64.b64decode(rec["key_b64"])
    k = rec.get("key")
    return None if k is None else k.encode("utf-8")


def _dump_value_bytes(rec: dict) -> Optional[bytes]:
    if "value_b64" in rec:
        return None if rec["value_b64"] is None else base64.b64decode(rec["value_b64"])
    assert rec.get("value") is None, f"dead/late record dumped as decoded value: {rec}"
    return None


def dump_to_actual(d: Dict[str, List[dict]], topics: dict, input_topic: str) -> dict:
    for k, recs in d.items():
        for r in recs:
            assert r.get("topic") == topics[k], f"dump of {topics[k]}: record names topic " \
                                                f"{r.get('topic')!r}"
    for k in ("sessions", "daily"):
        for r in d[k]:
            assert isinstance(r.get("value"), dict), \
                f"engage dump {topics[k]}: value not decoded: {json.dumps(r)[:300]}"
    return {
        "sessions": [r["value"] for r in d["sessions"]],
        "daily": [r["value"] for r in d["daily"]],
        "dead_letters": [_dl_entry(r.get("headers") or {}, _dump_key(r), _dump_value_bytes(r),
                                   input_topic, False, f"dumped dead letter {r.get('offset')}")
                         for r in d["dead_letters"]],
        "late": [_dl_entry(r.get("headers") or {}, _dump_key(r), _dump_value_bytes(r),
                           input_topic, True, f"dumped late record {r.get('offset')}")
                 for r in d["late"]],
    }


def check_dump_matches_raw(dump_actual: dict, raw_actual: dict) -> List[str]:
    """engage dump and the independent reader must see the same records
    (doubles within 1e-9 relative: dump prints them as JSON numbers)."""
    diffs = ["engage dump vs independent read: " + d
             for d in oracle.compare(raw_actual, dump_actual, check_iqr_null=False)]
    a = collections.Counter((x.get("session_id"), x["user_id"], x["start_ms"])
                            for x in dump_actual["sessions"])
    b = collections.Counter((x.get("session_id"), x["user_id"], x["start_ms"])
                            for x in raw_actual["sessions"])
    for x in list((a - b).elements())[:5]:
        diffs.append(f"session id in engage dump only: {x}")
    for x in list((b - a).elements())[:5]:
        diffs.append(f"session id in the independent read only: {x}")
    return diffs


def key_value_multiset(recs: List[RawRec]) -> collections.Counter:
    return collections.Counter((r.key, r.value) for r in recs)


def assert_oracle(expected: dict, actual: dict, what: str):
    diffs = oracle.compare(expected, actual)
    assert not diffs, f"{what}:\n" + oracle.format_diffs(diffs)


def kill(p: subprocess.Popen):
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
