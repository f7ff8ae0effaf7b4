# A server written the way Python programs take an inherited socket: socket.socket(fileno=3).
import os
import socket
import socketserver


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        body = f"pid={os.getpid()}\n".encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


server = socketserver.TCPServer(None, Handler, bind_and_activate=False)
server.socket = socket.socket(fileno=3)
# One write for the whole line: print() may write the text and the newline separately, and two
# workers starting together would then mix their lines on the shared stdout.
os.write(1, f"ready pid={os.getpid()}\n".encode())
server.serve_forever()
