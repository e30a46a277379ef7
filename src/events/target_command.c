/*
 * target_command.c - the local command target: a processor run like a
 * Lambda function, once per event.
 *
 * The program is started with posix_spawn (no shell, no PATH search) in a
 * process group of its own, with the event on stdin (a socket pair, so a
 * program that exits without reading it cannot raise SIGPIPE in ferryd),
 * stdout captured up to a cap and stderr captured up to a smaller cap and
 * logged. One poll() loop feeds stdin, drains both outputs and watches the
 * process (a pidfd), so nothing blocks on a processor that misbehaves.
 *
 * Invariants:
 * - The process is waited for with WNOWAIT until we are done signalling its
 *   group: while the leader is an unreaped zombie its PID, and so the group
 *   ID, cannot be reused, so kill(-pid) never reaches a stranger.
 * - On the timeout the whole group gets SIGTERM, then SIGKILL after the
 *   grace period. When the program exits, whatever it left running in its
 *   group is killed: an invocation ends when its handler returns.
 * - Output beyond the caps is read and thrown away (the child never blocks
 *   on a full pipe); a truncated stdout is never taken as a result.
 * - Every descriptor and the child are released on every path.
 */
#include "events_target_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/timefmt.h"

extern char **environ;

#define COMMAND_MAX_ARGS    64
#define COMMAND_MAX_ARG_LEN 4096

typedef struct command_target {
    events_target base;
    char **argv; /* NULL-terminated, owned */
    size_t stdout_max;
    size_t stderr_max;
    int64_t kill_grace_ms;
} command_target;

/* The state of one run. */
typedef struct run {
    pid_t pid;
    int in_fd, out_fd, err_fd, pid_fd; /* parent ends; -1 when closed */
    ferry_buf out, err;
    bool out_truncated, err_truncated;
    bool exited;
    siginfo_t status;
} run;

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int64_t now_ms(void)
{
    return ferry_time_mono_ns() / 1000000;
}

/* Reads what is available from *fd into buf (up to its cap, the rest is
 * discarded); closes *fd at end of file or on error. */
static void drain(int *fd, ferry_buf *buf, bool *truncated)
{
    char chunk[8192];
    for (;;) {
        ssize_t n = read(*fd, chunk, sizeof chunk);
        if (n > 0) {
            size_t room = buf->max_len - buf->len;
            size_t take = (size_t)n < room ? (size_t)n : room;
            if (take < (size_t)n)
                *truncated = true;
            if (take > 0 && ferry_buf_append(buf, chunk, take) != FERRY_OK)
                *truncated = true;
            continue;
        }
        if (n < 0 && (errno == EINTR))
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        close_fd(fd);
        return;
    }
}

static bool check_exited(run *r)
{
    if (r->exited)
        return true;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)r->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == r->pid) {
        r->exited = true;
        r->status = si;
    }
    return r->exited;
}

static ferry_err spawn(command_target *t, run *r)
{
    ferry_err result = FERRY_OK;
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_init = false, attr_init = false;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) != 0 || pipe2(out, O_CLOEXEC) != 0 ||
        pipe2(err, O_CLOEXEC) != 0) {
        result = FERRY_ERR_IO;
        goto out;
    }
    if (posix_spawn_file_actions_init(&fa) != 0) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    fa_init = true;
    if (posix_spawnattr_init(&attr) != 0) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    attr_init = true;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    /* Own process group (so the timeout reaches all it started), default
     * signal handling and an empty mask whatever ferryd's threads use. */
    if (posix_spawn_file_actions_adddup2(&fa, in[1], 0) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, out[1], 1) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, err[1], 2) != 0 ||
        posix_spawn_file_actions_addclosefrom_np(&fa, 3) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF) != 0 ||
        posix_spawnattr_setpgroup(&attr, 0) != 0 || posix_spawnattr_setsigmask(&attr, &none) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &all) != 0) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    int rc = posix_spawn(&r->pid, t->argv[0], &fa, &attr, t->argv, environ);
    if (rc != 0) {
        /* The program is missing or cannot be executed: only the operator
         * can fix that. Anything else (no memory, too many processes) may
         * pass by itself. */
        errno = rc;
        result = (rc == ENOENT || rc == EACCES || rc == ENOEXEC || rc == ENOTDIR || rc == ELOOP ||
                  rc == EISDIR || rc == ENAMETOOLONG)
                     ? FERRY_ERR_NOT_FOUND
                     : FERRY_ERR_UNAVAILABLE;
        goto out;
    }
    r->in_fd = in[0];
    r->out_fd = out[0];
    r->err_fd = err[0];
    in[0] = out[0] = err[0] = -1;
    fcntl(r->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(r->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(r->err_fd, F_SETFL, O_NONBLOCK);
#ifdef SYS_pidfd_open
    r->pid_fd = (int)syscall(SYS_pidfd_open, r->pid, 0);
#endif
out : {
    int saved = errno;
    if (fa_init)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_init)
        posix_spawnattr_destroy(&attr);
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
        close_fd(&err[i]);
    }
    errno = saved;
}
    return result;
}

/* The poll loop: feed stdin, drain outputs, enforce the deadline. Returns
 * true if the run timed out. */
static bool supervise(command_target *t, run *r, const char *json, size_t len, int64_t timeout_ms)
{
    size_t written = 0;
    int64_t start = now_ms();
    int64_t deadline = start + timeout_ms;
    int64_t kill_at = -1;
    bool timed_out = false;
    int64_t drain_until = -1;

    for (;;) {
        if (check_exited(r)) {
            if (drain_until < 0) {
                /* Leftovers in its group die with the invocation; the
                 * zombie leader keeps the group ID ours. */
                kill(-r->pid, SIGKILL);
                close_fd(&r->in_fd);
                drain_until = now_ms() + 1000;
            }
            if ((r->out_fd < 0 && r->err_fd < 0) || now_ms() >= drain_until)
                break;
        }
        int64_t now = now_ms();
        if (!r->exited && now >= deadline && kill_at < 0) {
            timed_out = true;
            kill(-r->pid, SIGTERM);
            kill_at = now + t->kill_grace_ms;
            close_fd(&r->in_fd);
        }
        if (!r->exited && kill_at >= 0 && now >= kill_at) {
            kill(-r->pid, SIGKILL);
            kill_at = INT64_MAX;
        }

        struct pollfd p[4];
        nfds_t n = 0;
        int i_in = -1, i_out = -1, i_err = -1;
        if (r->in_fd >= 0 && written < len) {
            i_in = (int)n;
            p[n++] = (struct pollfd){.fd = r->in_fd, .events = POLLOUT};
        }
        if (r->out_fd >= 0) {
            i_out = (int)n;
            p[n++] = (struct pollfd){.fd = r->out_fd, .events = POLLIN};
        }
        if (r->err_fd >= 0) {
            i_err = (int)n;
            p[n++] = (struct pollfd){.fd = r->err_fd, .events = POLLIN};
        }
        if (r->pid_fd >= 0 && !r->exited)
            p[n++] = (struct pollfd){.fd = r->pid_fd, .events = POLLIN};
        /* Without a pidfd, look at the child every 20 ms. */
        int64_t wait = r->pid_fd >= 0 ? 200 : 20;
        int64_t next = r->exited ? drain_until : kill_at >= 0 ? kill_at : deadline;
        if (next - now < wait)
            wait = next - now > 0 ? next - now : 0;
        int pr = poll(p, n, (int)wait);
        if (pr < 0 && errno != EINTR) {
            /* Cannot supervise any more: end the run rather than wait on
             * a process we can no longer time out. */
            timed_out = !r->exited;
            kill(-r->pid, SIGKILL);
            break;
        }
        if (pr <= 0)
            continue;
        if (i_in >= 0 && (p[i_in].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = send(r->in_fd, json + written, len - written, MSG_NOSIGNAL);
            if (w > 0)
                written += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                close_fd(&r->in_fd); /* it closed stdin: its choice */
            if (written == len && r->in_fd >= 0)
                shutdown(r->in_fd, SHUT_WR); /* end of file for the reader */
        }
        if (i_out >= 0 && (p[i_out].revents & (POLLIN | POLLERR | POLLHUP)))
            drain(&r->out_fd, &r->out, &r->out_truncated);
        if (i_err >= 0 && (p[i_err].revents & (POLLIN | POLLERR | POLLHUP)))
            drain(&r->err_fd, &r->err, &r->err_truncated);
    }
    return timed_out;
}

/* stdout as the processor's result, if it is one JSON object. */
static ferry_err take_result(run *r, events_delivery *out)
{
    json_error_t jerr;
    if (r->out_truncated || r->out.len == 0)
        return FERRY_OK;
    json_t *v = json_loadb(ferry_buf_str(&r->out), r->out.len, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL || !json_is_object(v)) {
        json_decref(v);
        return FERRY_OK;
    }
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (text == NULL)
        return FERRY_ERR_NOMEM;
    out->result_json = text;
    out->result_len = strlen(text);
    return FERRY_OK;
}

static ferry_err command_deliver(events_target *target, const char *event_id, const char *json,
                                 size_t len, int64_t timeout_ms, events_delivery *out)
{
    command_target *t = (command_target *)target;
    ferry_err result = FERRY_OK;
    run r = {.pid = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1, .pid_fd = -1};
    ferry_buf_init(&r.out, t->stdout_max);
    ferry_buf_init(&r.err, t->stderr_max);
    int64_t started = now_ms();

    result = spawn(t, &r);
    if (result == FERRY_ERR_NOT_FOUND) {
        /* Missing or not executable: no retry will fix that, a replay after
         * the operator has will. */
        out->outcome = EVENTS_FAILED;
        events_delivery_detail(out, "cannot run %s: %s", t->argv[0], strerror(errno));
        result = FERRY_OK;
        goto out;
    }
    if (result == FERRY_ERR_UNAVAILABLE || result == FERRY_ERR_IO) {
        out->outcome = EVENTS_RETRY_LATER;
        events_delivery_detail(out, "cannot start %s: %s", t->argv[0], strerror(errno));
        result = FERRY_OK;
        goto out;
    }
    if (result != FERRY_OK)
        goto out;

    bool timed_out = supervise(t, &r, json, len, timeout_ms);
    int st = 0;
    while (waitpid(r.pid, &st, 0) < 0 && errno == EINTR)
        ;
    int64_t elapsed = now_ms() - started;
    if (r.err.len > 0)
        log_info("events.command_stderr", "target=%s event=%s pid=%d truncated=%d text=\"%s\"",
                 target->name, event_id, (int)r.pid, r.err_truncated, ferry_buf_str(&r.err));
    if (timed_out) {
        out->outcome = EVENTS_RETRY_LATER;
        events_delivery_detail(out, "timed out after %lld ms; process group killed",
                               (long long)timeout_ms);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        out->outcome = EVENTS_DELIVERED;
        events_delivery_detail(out, "exit 0 in %lld ms%s", (long long)elapsed,
                               r.out_truncated ? "; stdout over its cap, ignored" : "");
        result = take_result(&r, out);
    } else if (WIFEXITED(st)) {
        out->outcome = EVENTS_RETRY_LATER;
        events_delivery_detail(out, "exit %d", WEXITSTATUS(st));
    } else {
        out->outcome = EVENTS_RETRY_LATER;
        events_delivery_detail(out, "killed by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
    r.pid = -1;
out:
    if (r.pid > 0) {
        /* Only reached if supervision could not run: do not leave it. */
        kill(-r.pid, SIGKILL);
        waitpid(r.pid, NULL, 0);
    }
    close_fd(&r.in_fd);
    close_fd(&r.out_fd);
    close_fd(&r.err_fd);
    close_fd(&r.pid_fd);
    ferry_buf_cleanup(&r.out);
    ferry_buf_cleanup(&r.err);
    return result;
}

static void command_destroy(events_target *target)
{
    command_target *t = (command_target *)target;
    for (size_t i = 0; t->argv != NULL && t->argv[i] != NULL; i++)
        free(t->argv[i]);
    free(t->argv);
    free(t);
}

static const events_target_ops command_ops = {
    .kind = "command",
    .deliver = command_deliver,
    .destroy = command_destroy,
};

ferry_err events_command_new(const events_command_config *config, events_target **out)
{
    ferry_err result = FERRY_OK;
    command_target *t = NULL;
    size_t argc = 0;
    if (config == NULL || config->argv == NULL || config->argv[0] == NULL ||
        strchr(config->argv[0], '/') == NULL || config->kill_grace_ms < 0)
        return FERRY_ERR_INVALID;
    while (config->argv[argc] != NULL) {
        if (argc >= COMMAND_MAX_ARGS ||
            strnlen(config->argv[argc], COMMAND_MAX_ARG_LEN + 1) > COMMAND_MAX_ARG_LEN)
            return FERRY_ERR_TOO_LARGE;
        argc++;
    }
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return FERRY_ERR_NOMEM;
    result = events_target_base_init(&t->base, &command_ops, config->name);
    if (result != FERRY_OK)
        goto out;
    t->argv = calloc(argc + 1, sizeof(char *));
    if (t->argv == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < argc; i++) {
        t->argv[i] = strdup(config->argv[i]);
        if (t->argv[i] == NULL) {
            result = FERRY_ERR_NOMEM;
            goto out;
        }
    }
    t->stdout_max = config->stdout_max > 0 ? config->stdout_max : EVENTS_COMMAND_STDOUT_MAX;
    t->stderr_max = config->stderr_max > 0 ? config->stderr_max : EVENTS_COMMAND_STDERR_MAX;
    t->kill_grace_ms = config->kill_grace_ms > 0 ? config->kill_grace_ms : 2000;
    *out = &t->base;
    t = NULL;
out:
    if (t != NULL) {
        char *name = t->base.name;
        command_destroy(&t->base);
        free(name);
    }
    return result;
}
