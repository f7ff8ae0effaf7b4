"""A control server that is not recluster, for the tests of what `recluster ctl` trusts.

    fake_control.py SOCKET MODE RECORD

Makes SOCKET's directory if it is missing (mode 0755, as a user planting it would), binds SOCKET
(mode 0666), prints `listening`, then serves connections one at a time. Everything it receives is
appended to RECORD (a line `connected` per connection first), so a test can tell whether ctl
sent anything. MODE says how it answers each request line:

- `hello`: as recluster would, a hello with pid 4242 and `{"v":1,"ok":true}` to anything else;
- `endless`: one line that never ends (`x` forever);
- `trickle`: one byte every 100 ms, never a newline;
- `twice`: `{"v":1,"ok":false,"error":"refused","ok":true}`, a key named twice;
- `busy:N`: the first N requests answered as recluster does when its message thread's queue is
  full, later ones `{"v":1,"ok":true}` (`busy:-1`: every one answered busy).
"""

import os
import socket
import sys
import time

path, mode, record = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o666)
server.listen(16)
print("listening", flush=True)


def note(data):
    with open(record, "ab") as out:
        out.write(data)


answered_busy = 0
while True:
    conn, _ = server.accept()
    note(b"connected\n")
    try:
        pending = b""
        while True:
            data = conn.recv(65536)
            if not data:
                break
            note(data)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if mode == "hello":
                    if b'"hello"' in line:
                        conn.sendall(b'{"v":1,"ok":true,"pid":4242,"name":null}\n')
                    else:
                        conn.sendall(b'{"v":1,"ok":true}\n')
                elif mode == "endless":
                    block = b"x" * 65536
                    while True:
                        conn.sendall(block)
                elif mode == "trickle":
                    while True:
                        conn.sendall(b"x")
                        time.sleep(0.1)
                elif mode == "twice":
                    conn.sendall(b'{"v":1,"ok":false,"error":"refused","ok":true}\n')
                elif mode.startswith("busy:"):
                    limit = int(mode.split(":")[1])
                    if limit < 0 or answered_busy < limit:
                        answered_busy += 1
                        conn.sendall(b'{"v":1,"ok":false,"error":"the message thread is busy '
                                     b'(64 messages from ctl wait already): try again"}\n')
                    else:
                        conn.sendall(b'{"v":1,"ok":true}\n')
    except OSError:
        pass
    conn.close()
