/* Stop-latency helper for benchmarks/goals.py (compiled by the harness with gcc).
 *
 *   stop_helper target FILE [LEFTOVERS]
 *       writes "start NS" to FILE at main(), forks LEFTOVERS children that pause()
 *       (default TERM disposition: they die on TERM), then waits; on SIGTERM or
 *       SIGUSR1 appends "handler NS" (CLOCK_MONOTONIC at handler entry) and exits 0.
 *   stop_helper send UNSHARE_PID FILE DELAY_US SIGNUM
 *       waits for FILE's start stamp, finds the namespace's PID 1 (the only child of
 *       UNSHARE_PID), sleeps until start + DELAY_US, kills it and prints "sent NS".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int out_fd = -1;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_signal(int sig) {
    long long t = now_ns();
    char buf[64];
    int n = snprintf(buf, sizeof buf, "handler %lld %d\n", t, sig);
    if (write(out_fd, buf, (size_t)n) < 0) _exit(3);
    _exit(0);
}

static int target(const char *file, int leftovers) {
    out_fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigfillset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "start %lld\n", now_ns());
    if (write(out_fd, buf, (size_t)n) < 0) return 3;
    for (int i = 0; i < leftovers; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGUSR1, SIG_DFL);
            close(out_fd);
            for (;;) pause();
        }
    }
    for (;;) pause();
}

static long long read_start(const char *file) {
    char buf[256];
    for (int tries = 0; tries < 200000; tries++) { /* about 20 s */
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            long long t;
            if (n > 0) {
                buf[n] = 0;
                if (sscanf(buf, "start %lld", &t) == 1) return t;
            }
        }
        usleep(100);
    }
    return -1;
}

static int find_pid1(const char *unshare_pid) {
    char path[128], buf[64];
    snprintf(path, sizeof path, "/proc/%s/task/%s/children", unshare_pid, unshare_pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    return atoi(buf);
}

static int send_sig(const char *unshare_pid, const char *file, long long delay_us, int sig) {
    long long start = read_start(file);
    if (start < 0) return 4;
    int pid1 = find_pid1(unshare_pid);
    if (pid1 <= 0) return 5;
    long long at = start + delay_us * 1000LL;
    struct timespec ts = {at / 1000000000LL, at % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
    long long t = now_ns();
    if (kill(pid1, sig) != 0) return 6;
    printf("sent %lld\n", t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "target") == 0)
        return target(argv[2], argc > 3 ? atoi(argv[3]) : 0);
    if (argc == 6 && strcmp(argv[1], "send") == 0)
        return send_sig(argv[2], argv[3], atoll(argv[4]), atoi(argv[5]));
    fprintf(stderr, "usage: stop_helper target FILE [N] | send UNSHARE_PID FILE DELAY_US SIG\n");
    return 2;
}
