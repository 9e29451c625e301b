"""Runs a command and measures it: wall time, CPU seconds and peak RSS of the
whole process tree (the child is started in its own session; every process of
that session is sampled from /proc, so a JVM started by a Python driver, as
pyspark does, is counted too).

CPU = max(rusage of the child and its waited-for descendants,
          sum over sampled processes of their last utime+stime).
Peak RSS = sum over the tree's processes of their own peak (VmHWM, last
value seen by the sampler, every SAMPLE_S): exact for one process, an upper
bound for several. (ru_maxrss is not used: after fork + exec Linux keeps the
forking parent's high-water mark in it, i.e. the harness's.) The largest
sampled sum of VmRSS is reported too (a lower bound).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Dict, List, Optional

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_S = 0.1

_live: Dict[int, subprocess.Popen] = {}


def kill_all() -> None:
    """Kills the process groups of every command still running (used on exit)."""
    for pid in list(_live):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _live.pop(pid, None)


def _session_pids(sid: int) -> List[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rfind(b")") + 2:].split()
        # fields after the name: state(0) ppid(1) pgrp(2) session(3)
        if int(rest[3]) == sid:
            out.append(int(name))
    return out


def _proc_cpu_rss(pid: int):
    """(cpu seconds, VmRSS bytes, VmHWM bytes) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        rest = st[st.rfind(b")") + 2:].split()
        cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime, stime
        rss = hwm = 0
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return cpu, rss, hwm
    except (OSError, IndexError, ValueError):
        return None


def loadavg() -> List[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def run(cmd: List[str], stdout_path: str, stderr_path: str, timeout: float,
        env: Optional[dict] = None, cwd: Optional[str] = None) -> dict:
    """Runs cmd to completion (or kills it after timeout seconds)."""
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.monotonic()
        load0 = loadavg()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                             cwd=cwd, start_new_session=True)
        _live[p.pid] = p
        cpu_by_pid: Dict[int, float] = {}
        hwm_by_pid: Dict[int, int] = {}
        peak_rss = 0
        status = None
        ru = None
        timed_out = False
        while True:
            wpid, st, r = os.wait4(p.pid, os.WNOHANG)
            if wpid == p.pid:
                status, ru = st, r
                break
            total = 0
            for pid in _session_pids(p.pid):
                cr = _proc_cpu_rss(pid)
                if cr:
                    # max: a zombie's status has no VmHWM any more
                    cpu_by_pid[pid] = max(cpu_by_pid.get(pid, 0.0), cr[0])
                    hwm_by_pid[pid] = max(hwm_by_pid.get(pid, 0), cr[2])
                    total += cr[1]
            peak_rss = max(peak_rss, total)
            if time.monotonic() - t0 > timeout:
                timed_out = True
                os.killpg(p.pid, signal.SIGKILL)
                _, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(SAMPLE_S)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        _live.pop(p.pid, None)
        # leftovers of the session (e.g. a JVM whose parent exited): end them
        for pid in _session_pids(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    ru_cpu = ru.ru_utime + ru.ru_stime
    sampled = sum(cpu_by_pid.values())
    return {
        "cmd": cmd,
        "rc": p.returncode,
        "timed_out": timed_out,
        "wall_s": round(wall, 3),
        "cpu_s": round(max(ru_cpu, sampled), 3),
        "cpu_user_s": round(ru.ru_utime, 3),
        "cpu_sys_s": round(ru.ru_stime, 3),
        "cpu_sampled_s": round(sampled, 3),
        "peak_rss_mb": round(sum(hwm_by_pid.values()) / 2**20, 1),
        "peak_rss_sampled_sum_mb": round(peak_rss / 2**20, 1),
        "processes": len(hwm_by_pid),
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }
