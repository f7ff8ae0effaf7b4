"""A Python worker on recluster's message socket, as the README shows it: it prints what it
receives (one JSON object per line) and, on SIGUSR1, asks every other worker for a pong."""
import json
import os
import signal
import socket
import sys

worker = os.environ["WORKER_ID"]


def say(text):
    """One write per line (print writes the newline apart when PYTHONUNBUFFERED is set): two
    workers share the pipe, and a line must not be cut by another's."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


bus = socket.socket(fileno=int(os.environ["RECLUSTER_MSG_FD"]))


def send(to, data):
    bus.sendall(json.dumps({"to": to, "data": data}).encode() + b"\n")


signal.signal(signal.SIGUSR1, lambda *_: send("others", {"ping": int(worker)}))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
say(f"ready id={worker} pid={os.getpid()}")
for line in bus.makefile("rb"):
    message = json.loads(line)
    say(f"python id={worker} got={json.dumps(message, separators=(',', ':'))}")
