/* Runs a command the way a restrictive seccomp profile would: unshare(2) fails with EPERM, as
 * Docker's and Kubernetes' default profiles have it for a process without CAP_SYS_ADMIN; with
 * --no-steering, setsockopt(SO_ATTACH_REUSEPORT_CBPF) fails too, as on a kernel without it.
 * Usage: no_unshare [--no-steering] CMD ARG... */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SO_ATTACH_REUSEPORT_CBPF_ 51
#define DENY BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

int main(int argc, char **argv) {
    int first = 1;
    int no_steering = argc > 1 && strcmp(argv[1], "--no-steering") == 0;
    if (no_steering) first = 2;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unshare, 0, 1),
        DENY,
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setsockopt, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SO_ATTACH_REUSEPORT_CBPF_, 0, 1),
        DENY,
        ALLOW,
    };
    struct sock_filter unshare_only[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unshare, 0, 1),
        DENY,
        ALLOW,
    };
    struct sock_fprog prog = no_steering
        ? (struct sock_fprog){.len = sizeof filter / sizeof filter[0], .filter = filter}
        : (struct sock_fprog){.len = sizeof unshare_only / sizeof unshare_only[0], .filter = unshare_only};
    if (argc <= first || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("no_unshare");
        return 2;
    }
    execvp(argv[first], argv + first);
    perror(argv[first]);
    return 127;
}
