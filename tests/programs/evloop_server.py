#!/usr/bin/env python3
"""A single-threaded event-loop HTTP server, as Node or any epoll server is, on the socket passed
at fd 3 (LISTEN_FDS), or on an SO_REUSEPORT socket of its own with `--bind PORT`.
`--version-file PATH` that says `broken` makes it exit 1 at once. After `--start-after MS` (its
start-up time) it makes the socket non-blocking, sends READY=1 on NOTIFY_SOCKET if it has one, and
on each readiness accepts until EAGAIN. Should the socket turn blocking under it, that accept
blocks and the whole loop freezes, which is what scripts/bench-reload looks for.
`--slow-every N --slow-ms MS`: every Nth request takes MS ms, blocking the loop.
TERM: stop accepting, finish the open connections, exit 0.
"""
import os
import selectors
import signal
import socket
import sys
import time


def main():
    start_after = 0.0
    if "--start-after" in sys.argv:
        start_after = int(sys.argv[sys.argv.index("--start-after") + 1]) / 1000
    if "--version-file" in sys.argv:
        with open(sys.argv[sys.argv.index("--version-file") + 1]) as f:
            if f.read().strip() == "broken":
                sys.exit("evloop_server: this release cannot start")
    slow_every = int(sys.argv[sys.argv.index("--slow-every") + 1]) if "--slow-every" in sys.argv else 0
    slow_ms = int(sys.argv[sys.argv.index("--slow-ms") + 1]) if "--slow-ms" in sys.argv else 50
    served = 0
    bind_port = None
    if "--bind" in sys.argv:
        bind_port = int(sys.argv[sys.argv.index("--bind") + 1])
    elif os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        sys.exit("evloop_server: needs one socket from LISTEN_FDS (or --bind PORT)")
    time.sleep(start_after)  # the server's own start-up time (loading code, warming caches)
    if bind_port is None:
        listener = socket.socket(fileno=3)
    else:  # a server that binds its own SO_REUSEPORT socket
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", bind_port))
        listener.listen(1024)
    listener.setblocking(False)
    body = f"id={os.environ.get('WORKER_ID')} pid={os.getpid()}\n".encode()
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno())
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_read, selectors.EVENT_READ, "wake")
    buffers = {}
    notify = os.environ.get("NOTIFY_SOCKET")
    if notify:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", notify)
    while not (stopping and not buffers):
        for key, _ in selector.select():
            if key.data == "wake":
                try:
                    wake_read.recv(64)
                except BlockingIOError:
                    pass
                if stopping and listener.fileno() >= 0:
                    selector.unregister(listener)
                    listener.close()
            elif key.data == "accept":
                # The listener may have been closed by a TERM handled earlier in this batch.
                while listener.fileno() >= 0:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    buffers[conn] = b""
                    selector.register(conn, selectors.EVENT_READ, "conn")
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                buffers[conn] += data
                while b"\r\n\r\n" in buffers[conn]:
                    head, buffers[conn] = buffers[conn].split(b"\r\n\r\n", 1)
                    close = b"connection: close" in head.lower() or bool(stopping)
                    served += 1
                    if slow_every and served % slow_every == 0:
                        time.sleep(slow_ms / 1000)  # a slow request blocks the whole loop
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s"
                                 % (len(body), b"close" if close else b"keep-alive", body))
                    if close:
                        data = b""
                        break
                if not data:
                    selector.unregister(conn)
                    del buffers[conn]
                    conn.close()


if __name__ == "__main__":
    main()
