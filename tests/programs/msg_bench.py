"""Both ends of scripts/bench-messages. Under recluster (-n 2), worker 0 drives and worker 1
answers, through RECLUSTER_MSG_FD; with --direct, the same two roles run in two processes joined
by a socketpair, with nothing in between (the baseline). The driver prints one line:
  result round_trips_per_s=R one_way_per_s=M
Usage: msg_bench.py ROUNDS FLOOD [--direct]
"""
import json
import os
import socket
import sys
import time

WINDOW = 100


def lines(sock):
    return sock.makefile("rb")


def send(sock, to, data):
    sock.sendall(json.dumps({"to": to, "data": data}).encode() + b"\n")


def answer(sock):
    """Worker 1: pong every ping, ack every WINDOW flood messages."""
    flood = 0
    for line in lines(sock):
        data = json.loads(line)["data"]
        if "ping" in data:
            send(sock, "worker:0", {"pong": data["ping"]})
        elif "flood" in data:
            flood += 1
            if flood % WINDOW == 0:
                send(sock, "worker:0", {"ack": flood})


def drive(sock, rounds, flood):
    """Worker 0: wait for worker 1, then time ROUNDS round trips and FLOOD one-way messages."""
    incoming = lines(sock)
    sock.settimeout(0.05)
    while True:  # worker 1 may not be started yet: ask until it answers
        send(sock, "worker:1", {"ping": -1})
        try:
            if json.loads(incoming.readline())["data"].get("pong") == -1:
                break
        except (socket.timeout, TimeoutError, ValueError):
            incoming = lines(sock)
    sock.settimeout(None)
    start = time.monotonic()
    for i in range(rounds):
        send(sock, "worker:1", {"ping": i})
        while json.loads(incoming.readline())["data"].get("pong") != i:
            pass
    round_trips = rounds / (time.monotonic() - start)
    start = time.monotonic()
    for i in range(1, flood + 1):
        send(sock, "worker:1", {"flood": i})
        if i % WINDOW == 0:  # at most one window in flight: nothing is dropped
            while json.loads(incoming.readline())["data"].get("ack") != i:
                pass
    one_way = flood / (time.monotonic() - start)
    print(f"result round_trips_per_s={round_trips:.0f} one_way_per_s={one_way:.0f}", flush=True)


def main():
    rounds, flood = int(sys.argv[1]), int(sys.argv[2])
    if "--direct" in sys.argv:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.fork() == 0:
            a.close()
            answer(b)
            os._exit(0)
        b.close()
        drive(a, rounds, flood)
        a.close()
        os.wait()
        return
    bus = socket.socket(fileno=int(os.environ["RECLUSTER_MSG_FD"]))
    if os.environ["WORKER_ID"] == "0":
        drive(bus, rounds, flood)
    else:
        answer(bus)


if __name__ == "__main__":
    main()
