"""Fixtures for the end-to-end tests on a real Kafka broker.

Environment:
  ENGAGE_BOOTSTRAP  use this broker (host:port) instead of starting one
  ENGAGE_BIN        the engage binary (default build/engage)
  ENGAGE_E2E_KEEP   1 = do not delete the tests' topics afterwards

Without ENGAGE_BOOTSTRAP a single-node KRaft broker is started once per
session with scripts/kafka/start.sh on a free port and a data dir under
pytest's tmp dir, and stopped with scripts/kafka/stop.sh at the end. A broker
that cannot be started or reached FAILS the tests (never skips them).
"""
import os
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))

import harness  # noqa: E402

# every engage process the tests start logs wall-clock times (for reading
# failures; the patterns the tests match allow the prefix)
os.environ.setdefault("ENGAGE_LOG_TIME", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "broker: needs a real Kafka broker (started by the "
                            "tests unless ENGAGE_BOOTSTRAP is set)")
    config.addinivalue_line("markers", "slow: takes minutes (large input, crash/restart)")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port_pair() -> int:
    """A port p with p and p+1 (the controller) free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 65535 and _port_free(p + 1):
            return p
    raise RuntimeError("no free port pair found")


def _wait_broker(bootstrap: str, timeout: float = 60) -> None:
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    err = None
    while time.monotonic() < deadline:
        try:
            if admin.list_topics(timeout=5).brokers:
                return
        except Exception as e:  # noqa: BLE001
            err = e
        time.sleep(0.5)
    pytest.fail(f"Kafka broker {bootstrap} does not answer within {timeout}s: {err}",
                pytrace=False)


# port and data dir of the broker the bootstrap fixture started itself (if it did)
_OWN_BROKER = {}


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory):
    env = os.environ.get("ENGAGE_BOOTSTRAP")
    if env:
        _wait_broker(env)
        yield env
        return
    port = _free_port_pair()
    datadir = tmp_path_factory.mktemp("kafka")
    start = os.path.join(ROOT, "scripts", "kafka", "start.sh")
    stop = os.path.join(ROOT, "scripts", "kafka", "stop.sh")
    try:
        r = subprocess.run([start, str(port), str(datadir)], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"cannot start a Kafka broker with {start}: {e}", pytrace=False)
    if r.returncode != 0:
        subprocess.run([stop, str(datadir)], cwd=ROOT, capture_output=True, timeout=120)
        pytest.fail(f"{start} {port} {datadir} failed (exit {r.returncode}):\n"
                    f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}", pytrace=False)
    bs = f"127.0.0.1:{port}"
    _OWN_BROKER.update(port=port, datadir=str(datadir))
    try:
        _wait_broker(bs)
        yield bs
    finally:
        subprocess.run([stop, str(datadir)], cwd=ROOT, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def engage_bin():
    path = os.environ.get("ENGAGE_BIN") or os.path.join(ROOT, "build", "engage")
    if not os.path.isabs(path):
        path = os.path.join(ROOT, path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"engage binary {path} not found or not executable (build it, or set "
                    "ENGAGE_BIN)", pytrace=False)
    return path


@pytest.fixture
def make_pipeline(engage_bin, bootstrap, tmp_path, request):
    """make_pipeline(name, input_topic=None, create_input=True, extra_conf=None):
    a Pipeline with fresh, unique topics (created here), state dir and group,
    in its own directory under tmp_path. Topics are deleted afterwards."""
    made = []
    tag = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:40].strip("-")

    def make(name="p", input_topic=None, extra_conf=None):
        p = harness.Pipeline(engage_bin, bootstrap, str(tmp_path / name), f"{tag}-{name}",
                             input_topic=input_topic, extra_conf=extra_conf)
        p.create_topics(with_input=input_topic is None)
        made.append((p, input_topic is None))
        return p

    yield make
    if os.environ.get("ENGAGE_E2E_KEEP") != "1":
        for p, own_input in made:
            try:
                p.delete_topics(with_input=own_input)
            except Exception:  # noqa: BLE001  (cleanup only)
                pass


@pytest.fixture(scope="session")
def broker_control(bootstrap):
    """(port, datadir) of the session broker, for tests that stop and restart
    it with scripts/kafka/stop.sh / start.sh; None when it is not ours to
    control (ENGAGE_BOOTSTRAP without ENGAGE_KAFKA_PORT / ENGAGE_KAFKA_DATADIR,
    as scripts/test.sh sets them)."""
    if _OWN_BROKER:
        return _OWN_BROKER["port"], _OWN_BROKER["datadir"]
    port, datadir = os.environ.get("ENGAGE_KAFKA_PORT"), os.environ.get("ENGAGE_KAFKA_DATADIR")
    if port and datadir and bootstrap.rsplit(":", 1)[-1] == port and os.path.isdir(datadir):
        return int(port), datadir
    return None
