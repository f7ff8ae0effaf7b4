/* A C server that takes its sockets with libsystemd's sd_listen_fds(), as a .socket unit's
 * service would: it refuses to run without them (sd_listen_fds checks LISTEN_PID). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

int main(void) {
    int n = sd_listen_fds(0);
    if (n < 1) {
        fprintf(stderr, "sd_listen_fds: %d\n", n);
        return 2;
    }
    if (sd_is_socket(SD_LISTEN_FDS_START, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
        fprintf(stderr, "fd 3 is not a listening stream socket\n");
        return 2;
    }
    printf("ready pid=%d fds=%d\n", (int)getpid(), n);
    fflush(stdout);
    for (;;) {
        int conn = accept(SD_LISTEN_FDS_START, NULL, NULL);
        if (conn < 0) continue;
        char buf[4096];
        ssize_t got = read(conn, buf, sizeof buf);
        (void)got;
        char reply[128];
        char body[32];
        int len = snprintf(body, sizeof body, "pid=%d\n", (int)getpid());
        int all = snprintf(reply, sizeof reply,
                           "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len, body);
        ssize_t sent = write(conn, reply, all);
        (void)sent;
        close(conn);
    }
}
