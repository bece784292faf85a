"""One BENCHXFER_HOME, one embedded MLflow server: a stale state file of a dead server is not trusted; a second user
(another sweep, here another process) finds the server running and uses it; the server stops when its last user
stops, whoever started it. No Ray. (One server start for the three: each start is seconds of the slow tier.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchxfer.tracking import LocalServer, _alive, healthy

ATTACH = """
import sys, time
from benchxfer.tracking import LocalServer
s = LocalServer(home=sys.argv[1])
print(s.start(), s.pid, flush=True)
sys.stdin.readline()  # hold the server until told
s.stop()
"""


def test_second_user_shares_the_home_server_and_the_last_one_stops_it(tmp_path):
    """The home holds a stale server.json first: left by a server that died (or a pid reused by another process,
    here this one's), it is not trusted and a new server starts."""
    (tmp_path / LocalServer.STATE).write_text(json.dumps({"pid": os.getpid(), "port": 9, "uri": "http://127.0.0.1:9"}))
    first = LocalServer(home=tmp_path)
    uri = first.start()
    pid = first.pid
    assert uri != "http://127.0.0.1:9" and healthy(uri) and pid != os.getpid()
    state = json.loads((tmp_path / LocalServer.STATE).read_text())
    assert state == {"pid": pid, "port": first.port, "uri": uri}

    # another process on the same home: no second server, the same one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    other = subprocess.Popen([sys.executable, "-c", ATTACH, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        other_uri, other_pid = other.stdout.readline().split()
        assert (other_uri, int(other_pid)) == (uri, pid)
        assert len(first.users()) == 2

        first.stop()  # the starter is done, the other still uses it: the server lives on
        assert healthy(uri) and _alive(pid)

        other.stdin.write("\n")
        other.stdin.flush()
        assert other.wait(timeout=60) == 0
    finally:
        if other.poll() is None:
            other.kill()
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid) and not healthy(uri)  # the last user stopped it
    assert not (tmp_path / LocalServer.STATE).exists()

