"""Fault-injection suite for exactly_once on a real Kafka broker (issue #3).

Every scenario ends the same way: all members stopped, one bounded
`engage run --until-end` in the same group finishes what live runs leave open
(the last days), and then the read_committed contents of every output topic
(sessions, daily-metrics, dead-letters, late-events) are compared with the
independent oracle: the same records, nothing missing and NO duplicate at all
(not even a byte-identical one: that is what exactly-once adds over
at-least-once).

  1. chaos: three members, input produced while they run, >= 20 SIGKILLs of
     random members at random moments, each restarted; plus a static member
     (kafka.group.instance.id) killed and restarted
  2. scale 1 -> 3 -> 2 -> 1 members (leaving members get SIGTERM, exit 0)
  3. zombie: SIGSTOP a member past the session timeout, the group moves on,
     SIGCONT: it must be fenced or abort, its late writes must not appear;
     and the worst case: a zombie stopped right before commit_transaction
     (offsets already in its transaction, an LD_PRELOAD shim stops it there)
     and resumed while that transaction is still open on the broker
  4. crash at each transaction fault point (ENGAGE_TEST_CRASH) and restart;
     after_commit must restore the local cache from the changelog
  5. broker stopped and restarted mid-run; members restarted like a
     supervisor would whenever they exit
  6. a member's local state directory deleted between runs: restored from
     the changelog
  7. a bounded run whose other member dies holding partitions: it must
     wait for the eviction, finish those partitions, and only then exit 0
  8. deterministic replay into fresh topics with 1 and 3 members, and
     at_least_once on the same input: identical outputs

Measurements are printed as "METRIC name=value" lines (pytest -s) and
appended to .cache/test_faults_metrics.txt: restore throughput (from the
"restored ... records/s" log lines), time from a kill to caught-up (group lag
0 again; dynamic and static membership, against the same new input without a
kill), exactly_once vs at_least_once throughput of a bounded run.

Members that exit by themselves are restarted (Member.supervise), as a
supervisor would; such exits are printed ("unexpected exits") and fail the
scenarios that must not have any.

Live members run with idle.timeout.ms=0 (no idle policy: it depends on wall
time, and the oracle comparison needs outputs that depend on the input only).
"""
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

import harness
import oracle

pytestmark = pytest.mark.broker

ROOT = harness.ROOT
OUT_KEYS = ("sessions", "daily", "dead_letters", "late")
SIGKILLED = -signal.SIGKILL

# Members of live scenarios: a killed member's partitions move after ~6 s
# (the broker's minimum session timeout); no idle policy (see above); a
# checkpoint (transaction) at least every 20000 records.
LIVE = {"kafka.session.timeout.ms": "6000", "kafka.heartbeat.interval.ms": "1000",
        "idle.timeout.ms": "0", "checkpoint.records": "20000"}

METRICS_FILE = os.path.join(ROOT, ".cache", "test_faults_metrics.txt")


def metric(name, value):
    line = f"METRIC {name}={value:.3f}" if isinstance(value, float) else f"METRIC {name}={value}"
    print(line, flush=True)
    try:
        os.makedirs(os.path.dirname(METRICS_FILE), exist_ok=True)
        with open(METRICS_FILE, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
    except OSError:
        pass


# --------------------------------------------------------------------------
# input

def gen(engage_bin, path, users, days, seed, max_events, partitions=4):
    harness.run_cmd([engage_bin, "gen", "--users", users, "--days", days, "--partitions",
                     partitions, "--seed", seed, "--max-events", max_events, "-o", path],
                    os.path.join(os.path.dirname(path), "gen.log"))
    return path


def split_jsonl(path, n, outdir):
    """Splits a JSONL file into n consecutive chunks (file order kept, so the
    records get the offsets the oracle assumes when produced in order)."""
    with open(path) as f:
        lines = f.readlines()
    size = -(-len(lines) // n)
    out = []
    for i in range(n):
        part = lines[i * size:(i + 1) * size]
        if not part:
            break
        cp = os.path.join(outdir, f"chunk-{i:03d}.jsonl")
        with open(cp, "w") as f:
            f.writelines(part)
        out.append(cp)
    return out


class Feeder(threading.Thread):
    """Produces chunks one after another, `interval` seconds apart, while the
    members run. Never retries a chunk (a partial retry would duplicate
    input): a failure is re-raised by join()."""

    def __init__(self, p, chunks, interval):
        super().__init__(daemon=True)
        self.p, self.chunks, self.interval = p, chunks, interval
        self.produced = 0
        self.error = None

    def run(self):
        try:
            for c in self.chunks:
                self.p.produce(c)
                self.produced += 1
                time.sleep(self.interval)
        except BaseException as e:  # noqa: BLE001  (re-raised in join)
            self.error = e

    def join(self, timeout=None):
        super().join(timeout)
        if self.error:
            raise self.error


# --------------------------------------------------------------------------
# members

RESTORE_RE = re.compile(r"restored (\S+) \[(\d+)\] from (\S+) \[(\d+)\]: (\d+) records in "
                        r"([0-9.]+) s \((\d+) records/s\); local offset was (-?\d+), "
                        r"committed (-?\d+)")


def restores(text):
    return [dict(topic=m.group(1), partition=int(m.group(2)), changelog=m.group(3),
                 records=int(m.group(5)), seconds=float(m.group(6)), rate=int(m.group(7)),
                 local=int(m.group(8)), committed=int(m.group(9)))
            for m in RESTORE_RE.finditer(text)]


def owned(text, input_topic):
    """Input partitions a member owns at the end of this log text."""
    pat = re.compile(r"(assigned|revoked) " + re.escape(input_topic) + r" \[(\d+)\]")
    own = set()
    for m in pat.finditer(text):
        (own.add if m.group(1) == "assigned" else own.discard)(int(m.group(2)))
    return sorted(own)


class Member:
    """One `engage run` process of a pipeline's group, with its own state dir
    (hence its own transactional.id) and log; restartable."""

    def __init__(self, p, name, state_dir=None, extra=None):
        self.p, self.name = p, name
        self.state_dir = state_dir or os.path.join(p.dir, f"state-{name}")
        self.log_path = os.path.join(p.dir, f"{name}.log")
        self.extra = dict(extra or {})
        self.proc = None
        self.reaped = False  # the last exit was caused or awaited by the test
        self.starts = 0
        self.exits = []  # (rc, expected)

    def start(self, until_end=False, env=None):
        assert not self.alive(), f"{self.name} is already running"
        args = [self.p.bin, "run", "-c", self.p.conf_path, "-X", f"state.dir={self.state_dir}"]
        for k, v in self.extra.items():
            args += ["-X", f"{k}={v}"]
        if until_end:
            args.append("--until-end")
        self.starts += 1
        self.reaped = False
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts} ({time.strftime('%H:%M:%S')}): "
                      f"{' '.join(args[1:])}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log,
                                         env=dict(os.environ, **(env or {})))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rc(self):
        return None if self.proc is None else self.proc.poll()

    def kill(self):
        self.reaped = True
        self.proc.send_signal(signal.SIGKILL)
        rc = self.proc.wait(timeout=30)
        self.exits.append((rc, True))
        return rc

    def term(self, timeout=90):
        """SIGTERM; returns the exit code."""
        self.reaped = True
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM\n"
                                 + self.tail())
        self.exits.append((rc, True))
        return rc

    def wait(self, timeout):
        self.reaped = True
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"{self.name} did not finish within {timeout}s\n" + self.tail())
        self.exits.append((rc, True))
        return rc

    def signal(self, sig):
        self.proc.send_signal(sig)

    def text(self, since=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def mark(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def owned(self, since=None):
        """Input partitions owned now (by default: per this incarnation's log,
        a SIGKILLed one never logs its revokes)."""
        text = self.text(since or 0)
        if since is None:
            text = text[text.rfind("\n=== start "):]
        return owned(text, self.p.topics["input"])

    def tail(self, n=40):
        return harness.tail(self.log_path, n)

    def supervise(self):
        """Restarts the member if it exited by itself (as a supervisor
        would); returns its exit code then, else None."""
        if self.proc is not None and not self.reaped and self.proc.poll() is not None:
            rc = self.proc.returncode
            self.exits.append((rc, False))
            self.start()
            return rc
        return None

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(timeout=30)


def wait_stable(members, quiet=6.0, timeout=60):
    """Until no member logged an assignment change for `quiet` seconds (the
    group is not rebalancing); members that exit are restarted."""
    pat = re.compile(r"^(?:\d\d:\d\d:\d\d\.\d{3} )?INFO engage: (?:assigned|revoked) ", re.M)
    last, t_change = None, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            m.supervise()
        now = tuple(len(pat.findall(m.text())) for m in members)
        if now != last:
            last, t_change = now, time.monotonic()
        elif time.monotonic() - t_change >= quiet:
            return True
        time.sleep(0.5)
    return False


def unexpected_exits(members):
    return [(m.name, rc) for m in members for rc, expected in m.exits if not expected]


# --------------------------------------------------------------------------
# the group's progress

class Lag:
    """Reads the group's committed input offsets (require_stable, as a
    read_committed consumer) and the input end offsets."""

    def __init__(self, p):
        self.topic = p.topics["input"]
        self.c = Consumer({"bootstrap.servers": p.bootstrap, "group.id": p.group,
                           "enable.auto.commit": False, "isolation.level": "read_committed"})
        md = self.c.list_topics(self.topic, timeout=30)
        self.parts = sorted(md.topics[self.topic].partitions)

    def committed(self, timeout=10):
        try:
            res = self.c.committed([TopicPartition(self.topic, i) for i in self.parts],
                                   timeout=timeout)
        except KafkaException:
            return None  # e.g. an open transaction holds an offset commit
        return {tp.partition: tp.offset for tp in res}

    def lag(self, timeout=10):
        com = self.committed(timeout)
        if com is None:
            return None
        total = 0
        for i in self.parts:
            try:
                _, hi = self.c.get_watermark_offsets(TopicPartition(self.topic, i),
                                                     timeout=timeout)
            except KafkaException:
                return None
            total += max(0, hi - max(com.get(i, 0), 0))
        return total

    def wait_caught_up(self, timeout, members=(), poll=0.5):
        """Seconds until the lag is 0 (members that exit are restarted
        meanwhile), or None on timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for m in members:
                m.supervise()
            if self.lag() == 0:
                return time.monotonic() - t0
            time.sleep(poll)
        return None

    def close(self):
        self.c.close()


# --------------------------------------------------------------------------
# the final check

def read_outputs(p):
    return {k: p.read_raw(k) for k in OUT_KEYS}


def duplicates(recs):
    cnt = collections.Counter(
        (r.key, r.value, tuple(sorted((h, v or b"") for h, v in r.headers.items())))
        for r in recs)
    return {k: n for k, n in cnt.items() if n > 1}


def check_exact(p, expected, what):
    """read_committed outputs == oracle, with no duplicate at all."""
    raw = read_outputs(p)
    problems = []
    for k, recs in raw.items():
        d = duplicates(recs)
        if d:
            ex = next(iter(d))
            problems.append(f"{k}: {sum(n - 1 for n in d.values())} duplicate record(s) "
                            f"(exactly-once violated), e.g. key {ex[0]!r} x{d[ex]}")
    assert not problems, f"{what}:\n" + "\n".join(problems)
    actual = harness.raw_to_actual(raw, p.topics["input"])
    harness.assert_oracle(expected, actual, what)
    for k in OUT_KEYS:
        assert len(raw[k]) == len(expected[k]), \
            f"{what}: {k}: {len(raw[k])} records, oracle {len(expected[k])}"
    print(f"{what}: outputs match the oracle exactly: " +
          ", ".join(f"{len(raw[k])} {k}" for k in OUT_KEYS))
    return raw


def finish_bounded(p, member, timeout=240, retries=0):
    """The ending of every live scenario: one bounded run in the same group.
    Returns its wall time."""
    t0 = time.monotonic()
    for attempt in range(retries + 1):
        member.start(until_end=True)
        rc = member.wait(timeout)
        if rc == 0:
            return time.monotonic() - t0
        print(f"bounded run of {member.name} exited {rc} (attempt {attempt + 1})")
    raise AssertionError(f"bounded run exited {rc}\n" + member.tail())


def stop_all(members, what):
    for m in members:
        if m.alive():
            rc = m.term()
            assert rc == 0, f"{what}: {m.name} exited {rc} on SIGTERM\n" + m.tail()


def delete_changelogs(p):
    if os.environ.get("ENGAGE_E2E_KEEP") == "1":
        return
    admin = AdminClient({"bootstrap.servers": p.bootstrap})
    for f in admin.delete_topics([f"{p.group}-state-changelog",
                                  f"{p.group}-aggregator-changelog"],
                                 operation_timeout=30).values():
        try:
            f.result(timeout=60)
        except Exception:  # noqa: BLE001  (cleanup only)
            pass


@pytest.fixture
def pipeline(make_pipeline):
    """make_pipeline that also deletes the changelog topics engage created,
    and kills members a failed test left running."""
    made, members = [], []

    def make(name, input_topic=None, extra_conf=None):
        p = make_pipeline(name, input_topic=input_topic, extra_conf=extra_conf)
        p.members = members
        made.append(p)
        return p

    yield make
    for m in members:
        m.cleanup()
    for p in made:
        delete_changelogs(p)


def new_member(p, name, **kw):
    m = Member(p, name, **kw)
    p.members.append(m)
    return m


def restore_metrics(prefix, texts):
    rs = [r for t in texts for r in restores(t) if r["records"] > 0]
    if not rs:
        return rs
    big = max(rs, key=lambda r: r["records"])
    total_n = sum(r["records"] for r in rs)
    total_s = sum(r["seconds"] for r in rs)
    metric(f"{prefix}_restores", len(rs))
    metric(f"{prefix}_restore_records_total", total_n)
    metric(f"{prefix}_restore_records_per_s", total_n / total_s if total_s > 0 else 0.0)
    metric(f"{prefix}_restore_largest_records", big["records"])
    metric(f"{prefix}_restore_largest_records_per_s", float(big["rate"]))
    return rs


# ================================================================== 1. chaos

@pytest.mark.slow
def test_chaos_random_kills_three_members(pipeline, engage_bin, tmp_path):
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 4000, 40, 101, 240000)
    expected = oracle.compute(oracle.read_jsonl(events))
    chunks = split_jsonl(events, 24, str(tmp_path))
    p = pipeline("chaos", extra_conf=LIVE)
    members = [new_member(p, n) for n in ("a", "b", "c")]
    lag = Lag(p)
    rnd = random.Random(20260701)
    t_start = time.monotonic()
    for m in members:
        m.start()
    feeder = Feeder(p, chunks[:-2], interval=2.5)
    feeder.start()
    kills = []
    try:
        while len(kills) < 20 or feeder.is_alive():
            time.sleep(rnd.uniform(1.0, 5.5))
            for m in members:
                rc = m.supervise()
                if rc is not None:
                    print(f"{m.name} exited {rc} by itself; restarted")
            victim = rnd.choice(members)
            if not victim.alive():
                continue
            victim.kill()
            t_kill = time.monotonic() - t_start
            down = rnd.choice([0.0, 0.0, rnd.uniform(0.2, 3.0)])
            time.sleep(down)
            victim.start()
            kills.append((round(t_kill, 1), victim.name, round(down, 1)))
            assert len(kills) <= 60, "feeder does not finish"
        feeder.join()
        t_chaos = time.monotonic() - t_start
        print(f"chaos: {len(kills)} SIGKILLs in {t_chaos:.0f}s (t, member, down s): {kills}")
        metric("chaos_kills", len(kills))
        metric("chaos_seconds", t_chaos)
        lag_at_end = lag.lag()
        metric("chaos_lag_at_last_kill", -1 if lag_at_end is None else lag_at_end)
        t = lag.wait_caught_up(120, members)
        assert t is not None, "members did not catch up after the kills\n" + \
            "\n".join(m.tail(15) for m in members)
        metric("chaos_last_kill_to_caught_up_s", t)

        # Time from a kill to caught up, against the same amount of new input
        # without a kill (both measured in a group that is not rebalancing).
        wait_stable(members)
        t0 = time.monotonic()
        p.produce(chunks[-2])
        t_base = lag.wait_caught_up(120, members)
        assert t_base is not None
        metric("chunk_caught_up_without_kill_s", time.monotonic() - t0)
        wait_stable(members)
        victim = max(members, key=lambda m: (len(m.owned()), m.name))
        owned_before = victim.owned()
        mark = victim.mark()
        t_kill = time.monotonic()
        victim.kill()
        victim.start()
        p.produce(chunks[-1])  # new input, some of it for the killed member
        t_caught = lag.wait_caught_up(120, members)
        assert t_caught is not None, "not caught up after the measured kill"
        metric("kill_to_caught_up_s", time.monotonic() - t_kill)
        metric("kill_to_caught_up_chunk_events", sum(1 for _ in open(chunks[-1])))
        seg = victim.text(mark)
        print(f"measured kill of {victim.name}: owned {owned_before}; after restart assigned "
              f"{owned(seg, p.topics['input'])}, restores {restores(seg)}")
        stop_all(members, "chaos")
    finally:
        lag.close()
        for m in members:
            m.cleanup()
    print("unexpected exits:", unexpected_exits(members))
    final = new_member(p, "final", state_dir=members[0].state_dir)
    t_final = finish_bounded(p, final)
    metric("chaos_final_bounded_run_s", t_final)
    restore_metrics("chaos", [m.text() for m in members + [final]])
    check_exact(p, expected, f"chaos: {len(kills)} kills of 3 members")


def test_kill_and_restart_static_member(pipeline, engage_bin, tmp_path):
    """Time from a kill to caught-up with static membership
    (kafka.group.instance.id): the member restarted at once takes its
    partitions back without waiting for the session timeout and without a
    rebalance of the other member (the chaos test measures the dynamic case,
    bounded by the session timeout)."""
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 2000, 40, 808, 80000)
    expected = oracle.compute(oracle.read_jsonl(events))
    chunks = split_jsonl(events, 8, str(tmp_path))
    p = pipeline("static", extra_conf=LIVE)
    members = [new_member(p, n, extra={"kafka.group.instance.id": f"pod-{n}"})
               for n in ("a", "b")]
    inp = p.topics["input"]
    lag = Lag(p)
    times = []
    try:
        for m in members:
            m.start()
        for c in chunks[:6]:
            p.produce(c)
            time.sleep(0.5)
        assert lag.wait_caught_up(90, members) is not None, members[0].tail()
        assert wait_stable(members), "the group does not settle"
        for i, c in enumerate(chunks[6:]):
            victim, other = members[i % 2], members[1 - i % 2]
            owned_before = victim.owned()
            vmark, omark = victim.mark(), other.mark()
            t0 = time.monotonic()
            victim.kill()
            victim.start()
            p.produce(c)
            assert lag.wait_caught_up(90, members) is not None, victim.tail()
            times.append(time.monotonic() - t0)
            seg = victim.text(vmark)
            print(f"static member {victim.name} killed owning {owned_before}: caught up after "
                  f"{times[-1]:.2f}s, assigned {owned(seg, inp)}, restores "
                  f"{[r for r in restores(seg) if r['records']]}")
            assert owned(seg, inp) == owned_before, "partitions not given back\n" + seg
            assert "revoked " + inp not in other.text(omark), \
                "the other member was rebalanced\n" + other.text(omark)
        metric("static_kill_to_caught_up_s", max(times))
        stop_all(members, "static membership")
    finally:
        lag.close()
        for m in members:
            m.cleanup()
    assert unexpected_exits(members) == []
    final = new_member(p, "final", state_dir=members[0].state_dir)
    finish_bounded(p, final)
    check_exact(p, expected, "static member killed and restarted")


# ================================================================== 2. scale

@pytest.mark.slow
def test_scale_1_3_2_1(pipeline, engage_bin, tmp_path):
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 3000, 40, 202, 160000)
    expected = oracle.compute(oracle.read_jsonl(events))
    chunks = split_jsonl(events, 16, str(tmp_path))
    p = pipeline("scale", extra_conf=LIVE)
    a, b, c = (new_member(p, n) for n in ("a", "b", "c"))
    lag = Lag(p)
    try:
        a.start()
        feeder = Feeder(p, chunks, interval=2.0)
        feeder.start()

        def wait_chunks(n, what):
            deadline = time.monotonic() + 120
            while feeder.produced < n and feeder.is_alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert feeder.produced >= n, f"feeder stalled before {what}"

        def wait_owning(ms, what, timeout=60):
            """Until every member in ms owns at least one input partition and
            together they own all of them."""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                own = [m.owned() for m in ms]
                if all(own) and sorted(sum(own, [])) == lag.parts:
                    return own
                for m in ms:
                    assert m.alive(), f"{what}: {m.name} exited {m.rc()}\n" + m.tail()
                time.sleep(0.5)
            raise AssertionError(f"{what}: ownership {[m.owned() for m in ms]}")

        wait_chunks(4, "scale-out")
        print("1 member:", wait_owning([a], "1 member"))
        b.start()
        c.start()
        print("3 members:", wait_owning([a, b, c], "3 members"))
        wait_chunks(8, "scale-in to 2")
        assert c.term() == 0, "c: SIGTERM should exit 0\n" + c.tail()
        print("2 members:", wait_owning([a, b], "2 members"))
        wait_chunks(12, "scale-in to 1")
        assert b.term() == 0, "b: SIGTERM should exit 0\n" + b.tail()
        print("1 member:", wait_owning([a], "1 member again"))
        feeder.join()
        t = lag.wait_caught_up(120)
        assert t is not None, "a did not catch up\n" + a.tail()
        assert a.term() == 0, "a: SIGTERM should exit 0\n" + a.tail()
    finally:
        lag.close()
    assert unexpected_exits([a, b, c]) == []
    for m in (b, c):
        assert owned(m.text(), p.topics["input"]) == [], f"{m.name} left with partitions"
        assert re.search(r"assigned " + re.escape(p.topics["input"]) + r" \[", m.text()), \
            f"{m.name} never got a partition"
    assert "revoked " + p.topics["input"] in a.text(), "a never gave a partition away"
    restore_metrics("scale", [m.text() for m in (a, b, c)])
    final = new_member(p, "final", state_dir=a.state_dir)
    finish_bounded(p, final)
    check_exact(p, expected, "scale 1 -> 3 -> 2 -> 1")


# ================================================================== 3. zombie

# What a member that was paused past its session timeout may log when it
# wakes up (librdkafka's own lines start with "%N|"): its session timed out /
# it is no longer a member, its transaction was aborted, or it was fenced and
# replaced its producer.
ZOMBIE_SIGNS = re.compile(
    r"^(?:%\d\|\S+\|SESSTMOUT\|.*|.*session timed out.*|.*WARN engage: transaction aborted.*|"
    r".*WARN engage: producer failed .*|.*fenced by a newer instance.*|"
    r".*(?:ILLEGAL_GENERATION|UNKNOWN_MEMBER_ID|generation id is not valid|Unknown member).*)$",
    re.M)


@pytest.mark.slow
@pytest.mark.parametrize("paused_s", [12, 30], ids=["past-session", "past-txn-timeout"])
def test_zombie_is_fenced(pipeline, engage_bin, tmp_path, paused_s):
    """paused_s 12: past the session timeout (6 s), z's transaction is still
    open when it wakes. 30: also past transaction.timeout.ms (10 s) and the
    coordinator's abort sweep (10 s), so the coordinator has aborted z's
    transaction and bumped its producer epoch: z's abort on the lost
    assignment is refused as fenced (CI once saw z exit 1 here). Either way
    z must recover in-process, like a Kafka Streams thread on a
    TaskMigrated error: abort or drop its producer, give its partitions up,
    rejoin, and keep working; the final counts stay exact."""
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 3000, 40, 303, 160000)
    expected = oracle.compute(oracle.read_jsonl(events))
    chunks = split_jsonl(events, 16, str(tmp_path))
    p = pipeline("zombie", extra_conf=LIVE)
    a, b, z = (new_member(p, n) for n in ("a", "b", "z"))
    others = [a, b]
    lag = Lag(p)
    try:
        for m in (a, b, z):
            m.start()
        feeder = Feeder(p, chunks, interval=2.0)
        feeder.start()
        # z must own input partitions and be in the middle of work
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (feeder.produced < 5 or not z.owned()):
            time.sleep(0.3)
        zparts = z.owned()
        assert zparts, "z never owned a partition\n" + z.tail()
        before = lag.committed() or {}
        marks = {m.name: m.mark() for m in others}
        zmark = z.mark()
        z.signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        print(f"SIGSTOP z owning {zparts}; committed then {before}")

        # the group moves on: the others own z's partitions and commit past
        # where z was
        taken = committed_past = False
        deadline = time.monotonic() + 90 + paused_s
        while time.monotonic() < deadline:
            for m in others:
                rc = m.supervise()
                if rc is not None:
                    print(f"{m.name} exited {rc} while z was stopped; restarted\n" + m.tail(8))
            now = set(sum((owned(m.text(marks[m.name]), p.topics["input"]) for m in others),
                          []))
            taken = set(zparts) <= now
            com = lag.committed(timeout=5) or {}
            committed_past = all(com.get(i, -1) > before.get(i, -1) for i in zparts)
            if taken and committed_past and time.monotonic() - t_stop > paused_s:
                break
            time.sleep(0.5)
        t_moved = time.monotonic() - t_stop
        assert taken, "the others did not take z's partitions\n" + a.tail() + b.tail()
        assert committed_past, (f"the others did not commit past z's offsets {before} for "
                                f"{zparts}: now {lag.committed()}")
        metric("zombie_stopped_s", t_moved)
        print(f"after {t_moved:.1f}s the others own {zparts} and committed past z")

        z.signal(signal.SIGCONT)
        # z must notice: learn that its session is gone, abort its open
        # transaction (on the lost assignment, or when its stale-generation
        # offsets are rejected) or replace its fenced producer, and give up
        # the partitions before it may get any back
        deadline = time.monotonic() + 60
        reaction = None
        gave_up = re.compile(r"revoked " + re.escape(p.topics["input"]) + r" \[(\d+)\]")
        while time.monotonic() < deadline:
            seg = z.text(zmark)
            if not z.alive():
                reaction = f"exited {z.rc()}"
                break
            signs = ZOMBIE_SIGNS.findall(seg)
            revoked = {int(x) for x in gave_up.findall(seg)}
            if signs and set(zparts) <= revoked:
                reaction = "aborted and gave up its partitions: " + " | ".join(
                    x[:160] for x in signs)
                break
            time.sleep(0.5)
        seg = z.text(zmark)
        print(f"zombie reaction: {reaction}\n--- z after SIGCONT ---\n" +
              "\n".join(seg.splitlines()[:30]))
        assert reaction, "z neither exited nor logged a lost session / abort / fence\n" + seg
        assert z.alive(), "z must recover in-process, not exit\n" + seg
        feeder.join()
        t = lag.wait_caught_up(120, [a, b, z])
        assert t is not None, "not caught up after the zombie\n" + z.tail()
        stop_all([a, b, z], "zombie")
    finally:
        lag.close()
        for m in (a, b, z):
            m.cleanup()
    print("unexpected exits:", unexpected_exits([a, b, z]))
    final = new_member(p, "final", state_dir=a.state_dir)
    finish_bounded(p, final)
    check_exact(p, expected, "zombie")


# A zombie in the worst place: paused right before commit_transaction, i.e.
# after its offsets were sent to the transaction (KIP-447: the group
# coordinator holds them as pending) and before EndTxn. A tiny LD_PRELOAD shim
# around librdkafka's rd_kafka_commit_transaction() stops the process
# (SIGSTOP) on the n-th call; the test resumes it with SIGCONT.
STOP_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <librdkafka/rdkafka.h>
rd_kafka_error_t *rd_kafka_commit_transaction(rd_kafka_t *rk, int timeout_ms) {
    static rd_kafka_error_t *(*real)(rd_kafka_t *, int);
    static long calls;
    if (!real)
        real = (rd_kafka_error_t * (*)(rd_kafka_t *, int))
            dlsym(RTLD_NEXT, "rd_kafka_commit_transaction");
    const char *n = getenv("ENGAGE_TEST_STOP_BEFORE_COMMIT");
    if (n && ++calls == atol(n)) {
        fprintf(stderr, "TEST SHIM: SIGSTOP before commit_transaction call %ld\n", calls);
        fflush(stderr);
        raise(SIGSTOP);
        fprintf(stderr, "TEST SHIM: resumed, calling commit_transaction\n");
    }
    return real(rk, timeout_ms);
}
"""


@pytest.fixture(scope="session")
def stop_shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("shim")
    src, so = d / "stop_before_commit.c", d / "stop_before_commit.so"
    src.write_text(STOP_SHIM)
    cflags = subprocess.run(["pkg-config", "--cflags", "rdkafka"], capture_output=True,
                            text=True).stdout.split()
    r = subprocess.run(["cc", "-shared", "-fPIC", "-O1", *cflags, "-o", str(so), str(src),
                        "-ldl"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot build the LD_PRELOAD shim: " + r.stderr[-500:])
    return str(so)


def process_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


RESUME_AFTER = float(os.environ.get("ENGAGE_TEST_ZOMBIE_RESUME_S", "30"))


@pytest.mark.slow
def test_zombie_stopped_between_send_offsets_and_commit(pipeline, engage_bin, tmp_path,
                                                        stop_shim):
    """z stops right before its 6th commit_transaction, with its offsets
    already sent to the transaction, and is resumed after RESUME_AFTER s, while
    its transaction is still open on the broker. Exactly-once requires that
    the members that take z's partitions over do not process them from older
    state meanwhile: they must wait until z's pending offsets are resolved
    (KIP-447: OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT
    until z commits or the coordinator aborts it at transaction.timeout.ms),
    as Kafka Streams does. Otherwise z's late commit duplicates their output."""
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 3000, 40, 313, 120000)
    expected = oracle.compute(oracle.read_jsonl(events))
    chunks = split_jsonl(events, 12, str(tmp_path))
    p = pipeline("zombie2", extra_conf=LIVE)
    a, b, z = (new_member(p, n) for n in ("a", "b", "z"))
    others = [a, b]
    lag = Lag(p)
    try:
        for m in (a, b):
            m.start()
        feeder = Feeder(p, chunks, interval=1.5)
        feeder.start()
        time.sleep(3)
        z.start(env={"LD_PRELOAD": stop_shim, "ENGAGE_TEST_STOP_BEFORE_COMMIT": "6"})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process_state(z.proc.pid) != "T":
            assert z.alive(), z.tail()
            time.sleep(0.2)
        assert process_state(z.proc.pid) == "T", "z never reached its 6th commit\n" + z.tail()
        t_stop = time.monotonic()
        zparts = z.owned()
        marks = {m.name: m.mark() for m in others}
        zmark = z.mark()
        print(f"z stopped before commit_transaction owning {zparts}")
        assert zparts, "z owned no input partition when it stopped\n" + z.tail()
        # Resume z while its transaction is still open on the broker (well
        # within transaction.timeout.ms = 60 s), after the group moved on
        # (session timeout 6 s): the others own z's partitions, or are
        # waiting for z's pending offsets (KIP-447) to be resolved first.
        deadline = t_stop + RESUME_AFTER
        while time.monotonic() < deadline:
            for m in others:
                rc = m.supervise()
                if rc is not None:
                    print(f"{m.name} exited {rc} while z was stopped; restarted\n" + m.tail(8))
            time.sleep(0.5)
        now = set(sum((owned(m.text(marks[m.name]), p.topics["input"]) for m in others), []))
        print(f"after {RESUME_AFTER:.0f}s the others own {sorted(now)} (z owned {zparts})")
        for m in others:
            warn = [ln for ln in m.text(marks[m.name]).splitlines()
                    if ln.startswith(("WARN", "ERROR"))]
            print(f"{m.name} while z was stopped:\n  " + "\n  ".join(warn[:10]))
        z.signal(signal.SIGCONT)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and z.alive():
            time.sleep(0.5)
        seg = z.text(zmark)
        failed = re.search(r"^(?:\d\d:\d\d:\d\d\.\d{3} )?(?:WARN|ERROR) engage: (?:commit_transaction|transaction).*$", seg,
                           re.M)
        print("z's pending transaction after SIGCONT: " +
              (f"failed: {failed.group(0)[:200]}" if failed else "COMMITTED (no error logged)"))
        print("--- z after SIGCONT ---\n" + "\n".join(seg.splitlines()[:25]))
        # committed or fenced, z keeps working (a fenced producer is
        # replaced in-process)
        assert z.alive(), "z must recover in-process, not exit\n" + seg
        feeder.join()
        t = lag.wait_caught_up(120, [a, b, z])
        assert t is not None, "not caught up after the zombie\n" + z.tail()
        stop_all([a, b, z], "zombie before commit")
    finally:
        lag.close()
        for m in (a, b, z):
            m.cleanup()
    print("unexpected exits:", unexpected_exits([a, b, z]))
    final = new_member(p, "final", state_dir=a.state_dir)
    finish_bounded(p, final)
    check_exact(p, expected, "zombie stopped between send_offsets and commit")


# ================================================================== 4. fault points

FAULT_POINTS = ("before_send_offsets", "before_commit", "during_commit", "after_commit")


@pytest.fixture(scope="module")
def fault_input(engage_bin, bootstrap, tmp_path_factory):
    """One input topic (120k events) shared by the fault-point tests."""
    d = tmp_path_factory.mktemp("fault-input")
    events = gen(engage_bin, str(d / "ev.jsonl"), 2500, 40, 404, 120000)
    expected = oracle.compute(oracle.read_jsonl(events))
    p = harness.Pipeline(engage_bin, bootstrap, str(d / "p"), "faultpoints")
    p.create_topics(with_input=True)
    p.produce(events)
    yield p.topics["input"], expected
    if os.environ.get("ENGAGE_E2E_KEEP") != "1":
        p.delete_topics(with_input=True)


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_crash_at_fault_point(pipeline, fault_input, point):
    input_topic, expected = fault_input
    # small transactions, so the 3rd checkpoint is mid-run
    p = pipeline(f"fp-{point}", input_topic=input_topic,
                 extra_conf=dict(LIVE, **{"checkpoint.records": "15000"}))
    m = new_member(p, "m")
    m.start(until_end=True, env={"ENGAGE_TEST_CRASH": f"{point}:3"})
    rc = m.wait(120)
    first = m.text()
    assert f"killing the process at {point}" in first, \
        f"the crash point {point} was not reached (exit {rc})\n" + m.tail()
    assert rc == SIGKILLED, f"exit {rc}, want SIGKILL\n" + m.tail()
    mark = m.mark()
    t0 = time.monotonic()
    m.start(until_end=True)
    rc = m.wait(180)
    assert rc == 0, f"restart after the crash at {point}: exit {rc}\n" + m.tail()
    seg = m.text(mark)
    rs = restores(seg)
    behind = [r for r in rs if r["committed"] >= 0 and r["local"] != r["committed"]]
    print(f"{point}: restart took {time.monotonic() - t0:.1f}s; restores: {rs}")
    if point == "after_commit":
        # committed in Kafka, local cache not written: the cache is behind
        assert behind, "after_commit: the restart should restore the stale cache\n" + seg
        for r in behind:
            assert r["local"] < r["committed"] and r["records"] > 0, r
        restore_metrics("after_commit", [seg])
    elif point in ("before_send_offsets", "before_commit"):
        # nothing committed: local cache == committed offset, no restore
        assert not behind, f"{point}: unexpected restore of a current cache: {behind}"
    else:
        print(f"during_commit: the killed commit {'DID' if behind else 'did NOT'} complete")
    check_exact(p, expected, f"crash at {point}")


# ================================================================== 5. broker restart

def _broker_scripts():
    return (os.path.join(ROOT, "scripts", "kafka", "start.sh"),
            os.path.join(ROOT, "scripts", "kafka", "stop.sh"))


@pytest.mark.slow
@pytest.mark.parametrize("down_s", [3, 15], ids=["short", "past-txn-timeout"])
def test_broker_restart_mid_run(pipeline, engage_bin, tmp_path, broker_control, bootstrap,
                                down_s):
    """The broker stops with transactions open and comes back. "short":
    back within the session timeout or soon after. "past-txn-timeout": down
    longer than session.timeout.ms (6 s) and transaction.timeout.ms (10 s),
    so the coordinator aborts the open transactions and bumps the producers'
    epochs: members see their assignment lost and their producer fenced, and
    must recover in-process (CI once saw a member exit 1 here)."""
    if broker_control is None:
        pytest.skip("the broker is not ours to restart (set ENGAGE_KAFKA_PORT and "
                    "ENGAGE_KAFKA_DATADIR, as scripts/test.sh does)")
    port, datadir = broker_control
    start_sh, stop_sh = _broker_scripts()
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 2500, 40, 505, 120000)
    expected = oracle.compute(oracle.read_jsonl(events))
    chunks = split_jsonl(events, 12, str(tmp_path))
    p = pipeline("broker", extra_conf=LIVE)
    members = [new_member(p, n) for n in ("a", "b")]
    broker_down = False
    try:
        for m in members:
            m.start()
        for c in chunks[:4]:
            p.produce(c)
            time.sleep(1.5)
            for m in members:
                m.supervise()
        # a backlog, so the broker goes away while transactions are open
        for c in chunks[4:7]:
            p.produce(c)
        t0 = time.monotonic()
        r = subprocess.run([stop_sh, datadir], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        broker_down = True
        assert r.returncode == 0, r.stdout + r.stderr
        t_stopped = time.monotonic() - t0
        time.sleep(down_s)
        r = subprocess.run([start_sh, str(port), datadir], cwd=ROOT, capture_output=True,
                           text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        broker_down = False
        t_outage = time.monotonic() - t0
        metric("broker_outage_s", t_outage)
        print(f"broker stopped in {t_stopped:.1f}s, back after {t_outage:.1f}s")
        harness.wait_topics(AdminClient({"bootstrap.servers": bootstrap}),
                            list(p.topics.values()), timeout=60)
        for c in chunks[7:]:
            for m in members:
                rc = m.supervise()
                if rc is not None:
                    print(f"{m.name} exited {rc}; restarted")
            p.produce(c)
            time.sleep(1.0)
        lag = Lag(p)
        try:
            t = lag.wait_caught_up(180, members)
        finally:
            lag.close()
        assert t is not None, "not caught up after the broker restart\n" + \
            "\n".join(m.tail(20) for m in members)
        metric("broker_back_to_caught_up_s", time.monotonic() - t0 - t_outage)
        stop_all(members, "broker restart")
    finally:
        for m in members:
            m.cleanup()
        if broker_down:  # leave a running broker to the other tests
            subprocess.run([start_sh, str(port), datadir], cwd=ROOT, capture_output=True,
                           timeout=180)
    ex = unexpected_exits(members)
    print("exits during/after the outage (restarted):", ex)
    metric("broker_restart_member_exits", len(ex))
    # a fenced producer or a lost assignment is recovered in-process
    assert not ex, f"members exited during/after the outage: {ex}"
    final = new_member(p, "final", state_dir=members[0].state_dir)
    finish_bounded(p, final, retries=2)
    check_exact(p, expected, "broker restart")


# ================================================================== 6. lost local state

def test_deleted_state_dir_is_restored(pipeline, engage_bin, tmp_path):
    # many users: a bigger changelog, for the restore throughput measurement
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 40000, 40, 606, 160000)
    expected = oracle.compute(oracle.read_jsonl(events))
    half1, half2 = split_jsonl(events, 2, str(tmp_path))
    p = pipeline("lost", extra_conf=LIVE)
    # small transactions: a long changelog (every checkpoint rewrites the keys
    # it changed) to measure restore throughput on
    a = new_member(p, "a", extra={"checkpoint.records": "2000", "batch.size": "2000"})
    b = new_member(p, "b", extra={"checkpoint.records": "2000", "batch.size": "2000"})
    p.produce(half1)
    lag = Lag(p)
    try:
        a.start()
        b.start()
        t = lag.wait_caught_up(120)
        assert t is not None, a.tail() + b.tail()
        committed = lag.committed()
        a_parts = a.owned()
    finally:
        lag.close()
    assert a.term() == 0 and b.term() == 0, a.tail() + b.tail()
    assert a_parts, "a owned no partition\n" + a.tail()
    print(f"run 1: a owned {a_parts}, committed {committed}")

    shutil.rmtree(a.state_dir)
    p.produce(half2)
    a.extra = {}
    mark = a.mark()
    finish_bounded(p, a)
    seg = a.text(mark)
    rs = {r["partition"]: r for r in restores(seg) if r["topic"] == p.topics["input"]}
    for i in a_parts:
        r = rs.get(i)
        assert r is not None, f"partition {i}: no restore logged after the state dir " \
                              f"was deleted\n" + seg
        assert r["local"] == -1 and r["committed"] == committed[i] > 0 and r["records"] > 0, r
    restore_metrics("deleted_state", [seg])
    check_exact(p, expected, "state dir deleted between runs")


def test_bounded_run_outlives_a_dead_member(pipeline, engage_bin, tmp_path):
    """A bounded run must not report success while a member that died still
    holds partitions: two members share the work, one is SIGKILLed, and the
    survivor must stay in the group until the broker evicts the dead member
    (session timeout), take over its partitions and finish them, then exit 0
    with every output exact. (Found by the crash test: a run restarted while
    killed incarnations were still group members finished only its own share.)"""
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 6000, 30, 808, 400000)
    expected = oracle.compute(oracle.read_jsonl(events))
    conf = dict(LIVE, **{"kafka.session.timeout.ms": "15000", "checkpoint.records": "5000",
                         "batch.size": "5000"})
    p = pipeline("outlive", extra_conf=conf)
    p.produce(events)
    a, b = new_member(p, "a"), new_member(p, "b")
    a.start(until_end=True)
    deadline = time.monotonic() + 60
    while not a.owned() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.owned(), "a was never assigned a partition\n" + a.tail()
    b.start(until_end=True)
    while not b.owned() and time.monotonic() < deadline and b.alive():
        time.sleep(0.05)
    assert b.owned() or not b.alive(), "b was never assigned a partition\n" + b.tail()
    a_held = a.owned()
    t_kill = time.monotonic()
    a.kill()
    print(f"killed a holding input partitions {a_held}; b owned {b.owned()}")
    rc = b.wait(180)
    took = time.monotonic() - t_kill
    assert rc == 0, f"b exited {rc}\n" + b.tail()
    print(f"b finished {took:.1f}s after the kill")
    check_exact(p, expected, "bounded run outliving a dead member")


# ================================================================== 7. replay

def test_replay_with_other_member_count_and_guarantee(pipeline, engage_bin, tmp_path):
    events = gen(engage_bin, str(tmp_path / "ev.jsonl"), 4000, 40, 707, 200000)
    n_events = sum(1 for _ in open(events))
    expected = oracle.compute(oracle.read_jsonl(events))
    one = pipeline("one", extra_conf=LIVE)
    one.produce(events)
    inp = one.topics["input"]

    # exactly_once vs at_least_once, each twice (alternating; the faster run
    # counts: this machine is shared), every run into fresh topics and group
    t_eos = finish_bounded(one, new_member(one, "m"))
    raw_one = check_exact(one, expected, "replay: 1 member, exactly_once")
    runs = {"exactly_once": [t_eos], "at_least_once": []}
    alos = []
    for i, guarantee in enumerate(("at_least_once", "exactly_once", "at_least_once")):
        q = pipeline(f"{guarantee[:3]}{i}", input_topic=inp,
                     extra_conf=dict(LIVE, **{"processing.guarantee": guarantee}))
        runs[guarantee].append(finish_bounded(q, new_member(q, "m")))
        if guarantee == "at_least_once":
            alos.append(q)
    t_eos, t_alo = min(runs["exactly_once"]), min(runs["at_least_once"])
    print("bounded run wall times:", runs)
    metric("bounded_events", n_events)
    metric("bounded_exactly_once_s", t_eos)
    metric("bounded_at_least_once_s", t_alo)
    metric("bounded_exactly_once_events_per_s", n_events / t_eos)
    metric("bounded_at_least_once_events_per_s", n_events / t_alo)
    metric("exactly_once_cost_pct", 100.0 * (t_eos - t_alo) / t_alo)

    three = pipeline("three", input_topic=inp, extra_conf=LIVE)
    ms = [new_member(three, n) for n in ("a", "b", "c")]
    t0 = time.monotonic()
    for m in ms:
        m.start(until_end=True)
    for m in ms:
        rc = m.wait(240)
        assert rc == 0, f"{m.name}: exit {rc}\n" + m.tail()
    metric("bounded_exactly_once_3_members_s", time.monotonic() - t0)
    assert sum(1 for m in ms if re.search(r"assigned " + re.escape(inp) + r" \[", m.text())) >= 2, \
        "the work was not spread over the members"
    raw_three = check_exact(three, expected, "replay: 3 members, exactly_once")
    raw_alo = read_outputs(alos[0])
    for k in OUT_KEYS:
        a = harness.key_value_multiset(raw_one[k])
        for other, raw in (("3 members", raw_three), ("at_least_once", raw_alo)):
            b = harness.key_value_multiset(raw[k])
            assert a == b, (f"{k}: 1-member run and {other} differ: {sum((a - b).values())} "
                            f"only in the first, {sum((b - a).values())} only in {other}")
    print("replays identical (multiset of key, value bytes) for", OUT_KEYS)
