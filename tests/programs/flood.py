"""A hostile (or broken) worker, for tests/integration/trust_floods.rs. Prints `ready pid=P id=I`
on stdout, then plays ROLE:

  info      after a message with "go", sends {"to":"recluster","data":{"cmd":"info"}} as fast as
            its socket takes it, and prints `stats sent=S answers=A busy=B t_ms=T` every 0.2 s
            (T: CLOCK_MONOTONIC in ms)
  others    worker 0: after "go", floods `others` with 1,000-byte messages (`stats sent=S`);
            worker 1: after "go", sends {"ping": N} to worker 2 every 50 ms;
            worker 2: prints `ping n=N age_ms=MS` for each ping it receives (MS: since it was
            sent); every worker reads its socket
  newlines  writes empty lines to stdout forever
  endless   writes one line to stdout that never ends
  stderr    writes lines to stderr forever (recluster's stderr may be a pipe nobody reads)

Usage: flood.py ROLE
"""
import json
import os
import socket
import sys
import threading
import time

ROLE = sys.argv[1]
ID = int(os.environ.get("WORKER_ID", "0"))


def say(line):
    """One line on stdout in one write, so that two workers' lines never mix."""
    os.write(1, (line + "\n").encode())


say(f"ready pid={os.getpid()} id={ID}")

if ROLE == "newlines":
    chunk = b"\n" * 65536
    while True:
        os.write(1, chunk)
if ROLE == "endless":
    chunk = b"x" * 65536
    while True:
        os.write(1, chunk)
if ROLE == "stderr":
    chunk = b"a line on stderr\n" * 4096
    while True:
        os.write(2, chunk)

bus = socket.socket(fileno=int(os.environ["RECLUSTER_MSG_FD"]))
go = threading.Event()
counts = {"sent": 0, "answers": 0, "busy": 0}


def read():
    for line in bus.makefile("rb"):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        data = message.get("data")
        if "busy" in message.get("error", ""):
            counts["busy"] += 1
        elif message.get("from", {}).get("recluster") and data:
            counts["answers"] += 1
        elif isinstance(data, dict) and "go" in data:
            go.set()
        elif isinstance(data, dict) and "ping" in data:
            age = time.monotonic() - data["t"]
            say(f"ping n={data['ping']} age_ms={age * 1000:.0f}")


def stats():
    while True:
        time.sleep(0.2)
        fields = " ".join(f"{k}={v}" for k, v in counts.items())
        say(f"stats {fields} t_ms={time.monotonic() * 1000:.0f}")


threading.Thread(target=read, daemon=True).start()
go.wait()
if ROLE == "info":
    threading.Thread(target=stats, daemon=True).start()
    batch = b'{"to":"recluster","data":{"cmd":"info"}}\n' * 100
    while True:
        bus.sendall(batch)
        counts["sent"] += 100
elif ROLE == "others" and ID == 0:
    threading.Thread(target=stats, daemon=True).start()
    one = json.dumps({"to": "others", "data": "x" * 1000}).encode() + b"\n"
    batch = one * 64
    while True:
        bus.sendall(batch)
        counts["sent"] += 64
elif ROLE == "others" and ID == 1:
    n = 0
    while True:
        ping = {"ping": n, "t": time.monotonic()}
        bus.sendall(json.dumps({"to": "worker:2", "data": ping}).encode() + b"\n")
        n += 1
        time.sleep(0.05)
else:
    threading.Event().wait()
