/*
 * bench_helper: tiny targets and probes for pyinit's benchmark harness
 * (benchmarks/run.py compiles this with gcc into a temporary directory).
 *
 * Written in C so that the measuring side adds as little as possible to what
 * is measured: a Python target would add its own start-up and signal-handling
 * latency to every number.
 *
 *   stamp FILE                 write CLOCK_MONOTONIC (ns) at main() entry to FILE, exit 0
 *   idle                       sleep until SIGTERM/SIGINT, then exit 0
 *   sigtarget FIFO             handlers for USR1 and TERM write CLOCK_MONOTONIC (ns) taken
 *                              at handler entry to FIFO; exit 0 after TERM
 *   send PID FIFO N SETTLE_MS GAP_US
 *                              wait for sigtarget's ready record, sleep SETTLE_MS, then N
 *                              times: take CLOCK_MONOTONIC, kill(PID, SIGUSR1), read the
 *                              handler's time; then once with SIGTERM. Prints
 *                              "usr1 NS" / "term NS" / "lost SIG" lines.
 *   storm N DONEFILE GOFILE    wait until GOFILE exists, then double-fork N orphans that
 *                              exit at once (each becomes a zombie of PID 1 until reaped);
 *                              write "START END" (ns) to DONEFILE, then behave like idle
 *   zsample PID DONEFILE TIMEOUT_MS INTERVAL_US
 *                              sample the zombies among PID's children until DONEFILE
 *                              exists and none are left (or timeout); prints "NS COUNT"
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static volatile sig_atomic_t stop_requested;
static int report_fd = -1;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Wait for SIGTERM/SIGINT; used by idle and after a storm. */
static int idle_until_stopped(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (!stop_requested)
        pause();
    return 0;
}

static int cmd_stamp(const char *path)
{
    uint64_t t = now_ns();
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%llu\n", (unsigned long long)t);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, buf, (size_t)n) != n)
        return 1;
    close(fd);
    return 0;
}

/* Handler entry time first, then an async-signal-safe write of it. */
static void on_measured_signal(int sig)
{
    uint64_t t = now_ns();
    ssize_t r = write(report_fd, &t, sizeof t);
    (void)r;
    if (sig == SIGTERM)
        stop_requested = 1;
}

static int cmd_sigtarget(const char *fifo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_measured_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    report_fd = open(fifo, O_WRONLY);
    if (report_fd < 0) {
        perror("sigtarget: open fifo");
        return 1;
    }
    uint64_t ready = 0;
    if (write(report_fd, &ready, sizeof ready) != sizeof ready)
        return 1;
    while (!stop_requested)
        pause();
    return 0;
}

/* Read one 8-byte record with a timeout; 1 on success. */
static int read_record(int fd, uint64_t *out, int timeout_ms)
{
    size_t got = 0;
    unsigned char *p = (unsigned char *)out;
    while (got < sizeof *out) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int r = poll(&pfd, 1, timeout_ms);
        if (r == 0)
            return 0;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        ssize_t n = read(fd, p + got, sizeof *out - got);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    return 1;
}

static int cmd_send(pid_t pid, const char *fifo, long n, long settle_ms, long gap_us)
{
    int fd = open(fifo, O_RDONLY);
    if (fd < 0) {
        perror("send: open fifo");
        return 1;
    }
    uint64_t t;
    if (!read_record(fd, &t, 30000)) {
        fprintf(stderr, "send: target never became ready\n");
        return 1;
    }
    sleep_us(settle_ms * 1000);
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        if (kill(pid, SIGUSR1) != 0) {
            perror("send: kill");
            return 1;
        }
        if (read_record(fd, &t, 2000))
            printf("usr1 %lld\n", (long long)(t - t0));
        else
            printf("lost usr1\n");
        sleep_us(gap_us);
    }
    uint64_t t0 = now_ns();
    kill(pid, SIGTERM);
    if (read_record(fd, &t, 5000))
        printf("term %lld\n", (long long)(t - t0));
    else
        printf("lost term\n");
    fflush(stdout);
    close(fd);
    return 0;
}

static int cmd_storm(long n, const char *donefile, const char *gofile)
{
    struct stat st;
    while (stat(gofile, &st) != 0)
        sleep_us(1000);
    uint64_t start = now_ns();
    for (long i = 0; i < n; i++) {
        pid_t child = fork();
        if (child < 0) {
            sleep_us(200); /* EAGAIN under pid pressure: let the init catch up */
            i--;
            continue;
        }
        if (child == 0) {
            /* The grandchild exits at once; its parent exits too, so it is
             * reparented to PID 1, which alone can reap it. */
            if (fork() == 0)
                _exit(0);
            _exit(0);
        }
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    uint64_t end = now_ns();
    char tmp[4096], buf[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", donefile);
    int len = snprintf(buf, sizeof buf, "%llu %llu\n", (unsigned long long)start,
                       (unsigned long long)end);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, buf, (size_t)len) != len)
        return 1;
    close(fd);
    if (rename(tmp, donefile) != 0)
        return 1;
    return idle_until_stopped();
}

/* Zombies among the children of every thread of PID. */
static int count_zombies(pid_t pid)
{
    char path[384];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *tasks = opendir(path);
    if (!tasks)
        return -1;
    int zombies = 0;
    struct dirent *task;
    static char buf[1 << 20];
    while ((task = readdir(tasks)) != NULL) {
        if (task->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/children", (int)pid, task->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t len = 0, r;
        while (len < (ssize_t)sizeof buf - 1 &&
               (r = read(fd, buf + len, sizeof buf - 1 - (size_t)len)) > 0)
            len += r;
        close(fd);
        buf[len] = 0;
        char *save = NULL;
        for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
            char spath[64], sbuf[512];
            snprintf(spath, sizeof spath, "/proc/%s/stat", tok);
            int sfd = open(spath, O_RDONLY);
            if (sfd < 0)
                continue;
            ssize_t sl = read(sfd, sbuf, sizeof sbuf - 1);
            close(sfd);
            if (sl <= 0)
                continue;
            sbuf[sl] = 0;
            char *paren = strrchr(sbuf, ')'); /* comm may contain spaces */
            if (paren && paren[1] == ' ' && paren[2] == 'Z')
                zombies++;
        }
    }
    closedir(tasks);
    return zombies;
}

static int cmd_zsample(pid_t pid, const char *donefile, long timeout_ms, long interval_us)
{
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
    struct stat st;
    for (;;) {
        int done = stat(donefile, &st) == 0;
        uint64_t t = now_ns();
        int z = count_zombies(pid);
        printf("%llu %d\n", (unsigned long long)t, z);
        if (z < 0 || (done && z == 0) || t > deadline)
            break;
        sleep_us(interval_us);
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "stamp") == 0)
        return cmd_stamp(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "idle") == 0)
        return idle_until_stopped();
    if (argc >= 3 && strcmp(argv[1], "sigtarget") == 0)
        return cmd_sigtarget(argv[2]);
    if (argc >= 7 && strcmp(argv[1], "send") == 0)
        return cmd_send((pid_t)atol(argv[2]), argv[3], atol(argv[4]), atol(argv[5]),
                        atol(argv[6]));
    if (argc >= 5 && strcmp(argv[1], "storm") == 0)
        return cmd_storm(atol(argv[2]), argv[3], argv[4]);
    if (argc >= 6 && strcmp(argv[1], "zsample") == 0)
        return cmd_zsample((pid_t)atol(argv[2]), argv[3], atol(argv[4]), atol(argv[5]));
    fprintf(stderr, "usage: see the comment at the top of bench_helper.c\n");
    return 2;
}
