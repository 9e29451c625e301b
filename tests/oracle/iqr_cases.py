#!/usr/bin/env python3
"""Hand-built IQR edge cases for `engage compact`, as a docs/JSONL.md event
file.

    python3 tests/oracle/iqr_cases.py --out iqr.jsonl

Every line is on time and valid (no dead letters, no late events): the point
is the shape of each day's session distribution. Four input partitions,
every user on one fixed partition, lines in event-time order. Days, counted
from 2026-03-01 (DAY_NAMES below):

  0  skewed: 40 ordinary sessions plus a 20-hour session, a 400-action
     session and one that is both (huge durations and action counts)
  1  a single session
  2  twelve identical sessions (IQR = 0, all valid)
  3  ten identical sessions, one 1 ms longer, one with one more action:
     IQR = 0 for both, only the ten are valid
  4  sessions crossing midnight into day 5 (they count on day 4), plus
     daytime sessions; day 5 has its own sessions, some by the same users
  6  values exactly on the fences: actions [1, 4, 4, 6, 9] (fences [1, 9]),
     durations (actions - 1) minutes (fences [0, 480000 ms]): all valid
  7  the same with 10 actions / 9 minutes in the last session: outside both
  8  two sessions; 9 nothing at all (an empty day between event days);
  10 three sessions, two by the same user; 11 four sessions, one huge
"""
from __future__ import annotations

import argparse
import json
import random
import sys

D0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z
DAY = 86_400_000
MIN = 60_000
SEC = 1_000
HOUR = 3_600_000
PARTITIONS = 4

DAY_NAMES = {0: "skewed", 1: "one session", 2: "all equal", 3: "IQR zero, outliers",
             4: "crossing midnight", 5: "after midnight", 6: "on the fences",
             7: "past the fences", 8: "two sessions", 9: "empty", 10: "three sessions",
             11: "four sessions"}


class Builder:
    def __init__(self):
        self.lines = []
        self.users = {}
        self.n = 0

    def part(self, user: str) -> int:
        if user not in self.users:
            self.users[user] = len(self.users) % PARTITIONS
        return self.users[user]

    def ev(self, user: str, ts: int, action: str = "view"):
        self.n += 1
        self.lines.append({"event_id": f"iqr-{self.n:06d}", "user_id": user, "timestamp": ts,
                           "action": action, "partition": self.part(user)})

    def session(self, user: str, start: int, gaps):
        """Events at start, then after each gap (ms, each <= 30 min)."""
        t = start
        self.ev(user, t)
        for g in gaps:
            assert 0 <= g <= 30 * MIN
            t += g
            self.ev(user, t)

    def out(self):
        # event-time order; ties keep insertion order (stable sort)
        return sorted(self.lines, key=lambda ln: ln["timestamp"])


def t(day: int, hms: str) -> int:
    parts = hms.split(":")
    h, m = int(parts[0]), int(parts[1])
    s = float(parts[2]) if len(parts) > 2 else 0.0
    return D0 + day * DAY + h * HOUR + m * MIN + int(round(s * 1000))


def build(seed: int = 4) -> list:
    b = Builder()
    rnd = random.Random(seed)

    # 0: skewed
    for i in range(40):
        k = rnd.randint(1, 8)
        b.session(f"sk-{i:02d}", t(0, "06:00") + rnd.randrange(10 * HOUR),
                  [rnd.randint(5 * SEC, 4 * MIN) for _ in range(k - 1)])
    b.session("whale-duration", t(0, "01:00"), [25 * MIN] * 48)   # 20 h, 49 actions
    b.session("whale-actions", t(0, "02:00"), [15 * SEC] * 399)    # 400 actions, 99.75 min
    b.session("whale-both", t(0, "01:30"), [4 * MIN] * 299)        # 300 actions, 19.9 h

    # 1: one session
    b.session("solo", t(1, "10:00"), [5 * MIN, 7 * MIN])

    # 2: all equal
    for i in range(12):
        b.session(f"eq-{i:02d}", t(2, "08:00") + i * 17 * MIN, [5 * MIN])

    # 3: IQR = 0 with one outlier of each kind
    for i in range(10):
        b.session(f"z-{i:02d}", t(3, "08:00") + i * 13 * MIN, [5 * MIN])
    b.session("z-long", t(3, "12:00"), [5 * MIN + 1])
    b.session("z-busy", t(3, "12:30"), [150 * SEC, 150 * SEC])

    # 4 -> 5: across midnight (15 min apart: 23:40 .. 00:25), and daytime
    for i in range(5):
        b.session(f"mid-{i}", t(4, "23:40") + i * MIN, [15 * MIN] * 3)
    for i in range(3):
        b.session(f"day4-{i}", t(4, "09:00") + i * HOUR, [2 * MIN] * (i + 1))
    for i in range(4):
        b.session(f"day5-{i}", t(5, "09:00") + i * HOUR, [3 * MIN] * (2 * i + 1))
    b.session("mid-0", t(5, "14:00"), [1 * MIN])  # the same user again, on day 5

    # 6 and 7: on the fences, then past them
    for day, last in ((6, 9), (7, 10)):
        for i, acts in enumerate((1, 4, 4, 6, last)):
            b.session(f"fence{day}-{i}", t(day, "10:00") + i * HOUR, [MIN] * (acts - 1))

    # 8: two sessions
    b.session("two-a", t(8, "10:00"), [MIN])
    b.session("two-b", t(8, "11:00"), [10 * MIN] * 6)
    # 9: nothing
    # 10: three sessions, two by one user (65 min apart: separate sessions)
    b.session("three-a", t(10, "10:00"), [MIN, MIN])
    b.session("three-a", t(10, "11:05"), [2 * MIN])
    b.session("three-b", t(10, "12:00"), [30 * SEC] * 5)
    # 11: four sessions, one huge
    for i, gaps in enumerate(([MIN], [2 * MIN], [3 * MIN], [29 * MIN] * 30)):
        b.session(f"four-{i}", t(11, "06:00") + i * 30 * SEC, gaps)
    return b.out()


def write(path: str, seed: int = 4) -> int:
    lines = build(seed)
    with open(path, "w", encoding="utf-8") as f:
        for ln in lines:
            f.write(json.dumps(ln, separators=(",", ":")) + "\n")
    return len(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="write the IQR edge-case event file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=4, help="seed of the ordinary sessions")
    a = ap.parse_args(argv)
    n = write(a.out, a.seed)
    print(f"{a.out}: {n} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
