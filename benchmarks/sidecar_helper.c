/* Sidecar benchmark helper for benchmarks/sidecars.py (compiled by the harness with gcc).
 *
 * Written in C so that no shell or interpreter start-up sits inside what is measured.
 *
 *   sidecar_helper svc FILE TAG
 *       appends "start TAG NS" (CLOCK_MONOTONIC) to FILE at main(); on SIGTERM appends
 *       "term TAG NS" and exits 0; otherwise waits in pause().
 *   sidecar_helper pause
 *       waits in pause() with default dispositions (TERM kills it).
 *   sidecar_helper writer N GOFIFO
 *       opens GOFIFO for reading and waits for one byte, then writes N lines of 99 bytes
 *       + '\n' ("L<9-digit sequence>:xxx...") to stdout as fast as it can, in 64 KiB
 *       blocks of whole lines; then waits for SIGTERM (exit 0).
 *   sidecar_helper flood
 *       writes such lines to stdout forever (TERM kills it).
 *   sidecar_helper kill UNSHARE_PID SIGNUM
 *       finds the namespace's PID 1 (the only child of UNSHARE_PID), takes CLOCK_MONOTONIC,
 *       kills it and prints "sent NS".
 *
 * Invoked as "run" (an s6 service directory's run file is a symlink to this binary), it
 * reads its arguments, whitespace-separated, from the file "argv" in the current directory
 * (s6-supervise runs ./run in the service directory), so s6 needs no shell either.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE 100
#define BLOCK_LINES 655 /* 65500 bytes per write */

static int out_fd = -1;
static char tag[64];

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_term_stamp(int sig)
{
    (void)sig;
    char buf[128];
    int n = snprintf(buf, sizeof buf, "term %s %lld\n", tag, now_ns());
    if (write(out_fd, buf, (size_t)n) < 0)
        _exit(3);
    _exit(0);
}

static void on_term_exit(int sig)
{
    (void)sig;
    _exit(0);
}

static void handle_term(void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigfillset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static int cmd_svc(const char *file, const char *name)
{
    out_fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0)
        return 2;
    snprintf(tag, sizeof tag, "%s", name);
    handle_term(on_term_stamp);
    char buf[128];
    int n = snprintf(buf, sizeof buf, "start %s %lld\n", tag, now_ns());
    if (write(out_fd, buf, (size_t)n) != n)
        return 3;
    for (;;)
        pause();
}

static void fill_line(char *p, long seq)
{
    snprintf(p, 12, "L%09ld:", seq % 1000000000L);
    memset(p + 11, 'x', LINE - 12);
    p[LINE - 1] = '\n';
}

static int write_all(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(1, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int cmd_writer(long n, const char *gofifo)
{
    handle_term(on_term_exit);
    int go = open(gofifo, O_RDONLY | O_CLOEXEC);
    if (go < 0)
        return 2;
    char c;
    if (read(go, &c, 1) != 1)
        return 3;
    close(go);
    static char block[LINE * BLOCK_LINES];
    for (long seq = 0; seq < n;) {
        int k = 0;
        for (; k < BLOCK_LINES && seq < n; k++, seq++)
            fill_line(block + k * LINE, seq);
        if (write_all(block, (size_t)k * LINE) != 0)
            return 4;
    }
    for (;;)
        pause();
}

static int cmd_flood(void)
{
    static char block[LINE * BLOCK_LINES];
    for (long seq = 0;;) {
        for (int k = 0; k < BLOCK_LINES; k++, seq++)
            fill_line(block + k * LINE, seq);
        if (write_all(block, sizeof block) != 0)
            return 4;
    }
}

static int find_pid1(const char *unshare_pid)
{
    char path[128], buf[64];
    snprintf(path, sizeof path, "/proc/%s/task/%s/children", unshare_pid, unshare_pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return atoi(buf);
}

static int cmd_kill(const char *unshare_pid, int sig)
{
    int pid1 = find_pid1(unshare_pid);
    if (pid1 <= 0)
        return 5;
    long long t = now_ns();
    if (kill(pid1, sig) != 0)
        return 6;
    printf("sent %lld\n", t);
    return 0;
}

static int dispatch(int argc, char **argv);

/* s6: ./run with the arguments in ./argv */
static int from_argv_file(void)
{
    static char buf[4096];
    int fd = open("argv", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 2;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 2;
    buf[n] = 0;
    char *args[16];
    int argc = 0;
    args[argc++] = "run";
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t\n", &save); tok && argc < 15;
         tok = strtok_r(NULL, " \t\n", &save))
        args[argc++] = tok;
    args[argc] = NULL;
    return dispatch(argc, args);
}

static int dispatch(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "svc") == 0)
        return cmd_svc(argv[2], argv[3]);
    if (argc == 2 && strcmp(argv[1], "pause") == 0) {
        for (;;)
            pause();
    }
    if (argc == 4 && strcmp(argv[1], "writer") == 0)
        return cmd_writer(atol(argv[2]), argv[3]);
    if (argc == 2 && strcmp(argv[1], "flood") == 0)
        return cmd_flood();
    if (argc == 4 && strcmp(argv[1], "kill") == 0)
        return cmd_kill(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: see the comment at the top of sidecar_helper.c\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (strcmp(base, "run") == 0)
        return from_argv_file();
    return dispatch(argc, argv);
}
