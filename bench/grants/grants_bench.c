/*
 * grants_bench.c - round trips over a real broker with mutual TLS.
 *
 *   ferry_bench_grants echo   --port P --ca CA --cert ferryd.pem --key ferryd.key
 *       a bare responder: subscribes like ferryd and publishes every request
 *       straight back on the device's response topic (the floor to compare
 *       ferryd against: same broker, same TLS, same QoS 1, no work).
 *   ferryd (or the echo) must be running for:
 *   ferry_bench_grants client --port P --ca CA --pki DIR --devices N --seconds S
 *                             [--threads T] [--broker-pid P] [--responder-pid P]
 *       N devices (DIR/devices/bench-<i>.pem), each in a closed loop: publish
 *       a request, wait for the answer, publish the next. Prints
 *       `rtt: n=… p50_us=… p99_us=… per_s=… cpu_us=… broker_cpu_us=…
 *       responder_cpu_us=…` over the samples after a warm-up of a quarter of
 *       the run; the cpu figures are CPU time (user + system, all threads)
 *       per round trip over the same span: the client's own, and the
 *       broker's and the responder's when their process ids are given.
 *
 * Every connection is driven the way ferryd's broker link drives its own
 * (src/broker/broker_link.c): libmosquitto's external-loop calls, not its
 * threads. One turn reads what has arrived (the message callback publishes,
 * which libmosquitto only queues), then writes each touched connection's
 * queued packets with the socket corked, so a PUBACK and the publish that
 * follows it leave as one TCP segment. The devices are T driver threads
 * (default 1) over epoll rather than one mosquitto_loop_start() thread per
 * device: 100 threads doing TLS on a 2-core machine took the CPU the broker
 * and the responder under test need, and capped both. The echo drives its
 * one connection the same way, draining the socket before it writes as
 * ferryd does, so that it stays the floor for ferryd's I/O pattern.
 *
 * Every client sets TCP_NODELAY: with Nagle a loopback round trip takes
 * tens of milliseconds instead of ~100 µs.
 */
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "broker/broker_io.h"

#define MAX_SAMPLES     (4u << 20)
#define MAX_THREADS     16
#define EVENTS_PER_WAIT 256
#define MISC_EVERY_NS   200000000 /* keepalive housekeeping, every connection */

typedef struct options {
    int port;
    const char *ca, *cert, *key, *pki;
    int devices;
    int threads;
    double seconds;
    int broker_pid, responder_pid; /* 0: not watched */
} options;

/* One MQTT connection driven by a driver thread. */
typedef struct conn {
    struct mosquitto *m;
    const char *name;
    int fd;           /* the socket registered with the driver's epoll, -1 if none */
    bool epoll_out;   /* registered for EPOLLOUT: a write the socket refused */
    bool drain;       /* read until the socket is empty before writing (the echo) */
    uint64_t touched; /* the driver turn that last read it */
} conn;

typedef struct device {
    conn c;
    char name[32];
    char request_topic[96];
    char response_topic[96];
    int64_t sent_ns;
    unsigned long seq;
} device;

/* A driver thread and the connections it owns. */
typedef struct driver {
    pthread_t thread;
    int epoll_fd;
    conn **conns;
    size_t n_conns;
    uint64_t turn;
} driver;

static atomic_bool running = true; /* devices publish their next request */
static atomic_bool driving = true; /* driver threads keep turning */
static atomic_bool recording = false;
static atomic_uint n_samples;
static int64_t *samples;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fail(const char *who, const char *what, int rc)
{
    fprintf(stderr, "bench: %s: %s: %s\n", who, what,
            rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    exit(1);
}

static void configure(struct mosquitto *m, const options *o, const char *cert, const char *key)
{
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    /* Publishes from callbacks are only queued; the driver writes them. */
    mosquitto_threaded_set(m, true);
    if (mosquitto_tls_set(m, o->ca, NULL, cert, key, NULL) != MOSQ_ERR_SUCCESS ||
        mosquitto_tls_opts_set(m, SSL_VERIFY_PEER, "tlsv1.2", NULL) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: TLS setup failed for %s\n", cert);
        exit(1);
    }
}

/* ---- the driver: libmosquitto's external loop over epoll ---------------- */

static void watch(driver *drv, conn *c, bool want_out)
{
    int fd = mosquitto_socket(c->m);
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0u), .data.ptr = c};
    if (fd != c->fd) {
        /* libmosquitto opened a new socket (it never does here: no
         * reconnects), or this is the first registration. */
        if (fd < 0 || epoll_ctl(drv->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0)
            fail(c->name, "epoll_ctl add", MOSQ_ERR_ERRNO);
        c->fd = fd;
    } else if (want_out != c->epoll_out && epoll_ctl(drv->epoll_fd, EPOLL_CTL_MOD, fd, &ev) != 0) {
        fail(c->name, "epoll_ctl mod", MOSQ_ERR_ERRNO);
    }
    c->epoll_out = want_out;
}

static bool socket_readable(const conn *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
}

/* Reads the packets that have arrived (callbacks run from here): all that
 * TLS holds, and for a draining connection what else the socket has, up
 * to 64 reads more. */
static void read_input(conn *c)
{
    for (int i = 0;; i++) {
        int rc = mosquitto_loop_read(c->m, 1);
        if (rc != MOSQ_ERR_SUCCESS)
            fail(c->name, "connection lost", rc);
        if (broker_tls_readable(mosquitto_ssl_get(c->m))) /* as ferryd's link */
            continue;
        if (!c->drain || i >= 64 || !socket_readable(c))
            break;
    }
}

/* Writes every queued packet with the socket corked (one segment for a
 * PUBACK and the publish after it); a write the socket refused waits for
 * EPOLLOUT. */
static void write_queued(driver *drv, conn *c)
{
    if (!mosquitto_want_write(c->m)) {
        if (c->epoll_out)
            watch(drv, c, false);
        return;
    }
    int rc = broker_write_corked(c->m); /* as ferryd's link */
    if (rc != MOSQ_ERR_SUCCESS)
        fail(c->name, "write failed", rc);
    bool pending = mosquitto_want_write(c->m);
    if (pending != c->epoll_out)
        watch(drv, c, pending);
}

static void *drive(void *arg)
{
    driver *drv = arg;
    struct epoll_event events[EVENTS_PER_WAIT];
    conn *touched[EVENTS_PER_WAIT];
    int64_t next_misc = now_ns() + MISC_EVERY_NS;

    while (atomic_load(&driving)) {
        int n = epoll_wait(drv->epoll_fd, events, EVENTS_PER_WAIT, 50);
        if (n < 0 && errno != EINTR)
            fail("driver", "epoll_wait", MOSQ_ERR_ERRNO);
        drv->turn++;
        size_t n_touched = 0;
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                read_input(c);
            if (c->touched != drv->turn) {
                c->touched = drv->turn;
                touched[n_touched++] = c;
            }
        }
        for (size_t i = 0; i < n_touched; i++)
            write_queued(drv, touched[i]);
        /* Keepalive pings, and connections whose TLS handshake or CONNECT
         * still waits for a write. */
        int64_t t = now_ns();
        if (t >= next_misc) {
            next_misc = t + MISC_EVERY_NS;
            for (size_t i = 0; i < drv->n_conns; i++) {
                int rc = mosquitto_loop_misc(drv->conns[i]->m);
                if (rc != MOSQ_ERR_SUCCESS)
                    fail(drv->conns[i]->name, "connection lost", rc);
                write_queued(drv, drv->conns[i]);
            }
        }
    }
    return NULL;
}

/* Connects c (TCP now; TLS and CONNECT complete in the driver's turns) and
 * hands it to drv. */
static void connect_conn(driver *drv, conn *c, int port)
{
    int rc = mosquitto_connect_bind_v5(c->m, "127.0.0.1", port, 30, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        fail(c->name, "cannot connect", rc);
    c->fd = -1;
    /* As ferryd's broker link: one read() takes in every record that has
     * arrived, not two per record. */
    SSL *ssl = mosquitto_ssl_get(c->m);
    if (ssl != NULL)
        SSL_set_read_ahead(ssl, 1);
    watch(drv, c, false);
    write_queued(drv, c);
}

static void driver_init(driver *drv, size_t capacity)
{
    drv->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    drv->conns = calloc(capacity, sizeof *drv->conns);
    if (drv->epoll_fd < 0 || drv->conns == NULL) {
        fprintf(stderr, "bench: out of resources\n");
        exit(1);
    }
}

static void driver_cleanup(driver *drv)
{
    close(drv->epoll_fd);
    free(drv->conns);
}

/* ---- echo responder ---------------------------------------------------- */

static void echo_on_connect(struct mosquitto *m, void *obj, int rc, int flags,
                            const mosquitto_property *p)
{
    (void)obj;
    (void)flags;
    (void)p;
    if (rc != 0) {
        fprintf(stderr, "echo: connect refused: %d\n", rc);
        exit(1);
    }
    mosquitto_subscribe_v5(m, NULL, "$share/ferryd/ferry/+/upload/request", 1, 0, NULL);
}

static void echo_on_subscribe(struct mosquitto *m, void *obj, int mid, int qos_count,
                              const int *granted, const mosquitto_property *p)
{
    (void)m;
    (void)obj;
    (void)mid;
    (void)qos_count;
    (void)granted;
    (void)p;
    fprintf(stderr, "echo: running\n");
}

static void echo_on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
                            const mosquitto_property *p)
{
    (void)obj;
    (void)p;
    char topic[256];
    size_t len = strlen(msg->topic);
    const char *suffix = "/request";
    if (len >= sizeof topic || len < strlen(suffix))
        return;
    memcpy(topic, msg->topic, len - strlen(suffix));
    strcpy(topic + len - strlen(suffix), "/response");
    mosquitto_publish_v5(m, NULL, topic, msg->payloadlen, msg->payload, 1, false, NULL);
}

static void stop_echo(int sig)
{
    (void)sig;
    atomic_store(&driving, false);
}

static int run_echo(const options *o)
{
    driver drv = {0};
    conn c = {.name = "echo", .drain = true};
    c.m = mosquitto_new("ferryd", false, NULL);
    if (c.m == NULL)
        return 1;
    configure(c.m, o, o->cert, o->key);
    mosquitto_connect_v5_callback_set(c.m, echo_on_connect);
    mosquitto_subscribe_v5_callback_set(c.m, echo_on_subscribe);
    mosquitto_message_v5_callback_set(c.m, echo_on_message);
    signal(SIGTERM, stop_echo);
    signal(SIGINT, stop_echo);
    driver_init(&drv, 1);
    drv.conns[drv.n_conns++] = &c;
    connect_conn(&drv, &c, o->port);
    drive(&drv);
    mosquitto_destroy(c.m);
    driver_cleanup(&drv);
    return 0;
}

/* ---- closed-loop devices ----------------------------------------------- */

static void send_request(struct mosquitto *m, device *d)
{
    char body[192];
    int n = snprintf(body, sizeof body,
                     "{\"id\":\"b-%lu\",\"name\":\"bench.bin\",\"size\":1024,"
                     "\"content_type\":\"application/octet-stream\"}",
                     ++d->seq);
    d->sent_ns = now_ns();
    int rc = mosquitto_publish_v5(m, NULL, d->request_topic, n, body, 1, false, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        fail(d->name, "publish failed", rc);
}

static void dev_on_connect(struct mosquitto *m, void *obj, int rc, int flags,
                           const mosquitto_property *p)
{
    (void)flags;
    (void)p;
    device *d = obj;
    if (rc != 0) {
        fprintf(stderr, "%s: connect refused: %d\n", d->name, rc);
        exit(1);
    }
    mosquitto_subscribe_v5(m, NULL, d->response_topic, 1, 0, NULL);
}

static void dev_on_subscribe(struct mosquitto *m, void *obj, int mid, int qos_count,
                             const int *granted, const mosquitto_property *p)
{
    (void)mid;
    (void)qos_count;
    (void)granted;
    (void)p;
    send_request(m, obj);
}

static void dev_on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
                           const mosquitto_property *p)
{
    (void)msg;
    (void)p;
    device *d = obj;
    int64_t rtt = now_ns() - d->sent_ns;
    if (atomic_load(&recording)) {
        unsigned i = atomic_fetch_add(&n_samples, 1);
        if (i < MAX_SAMPLES)
            samples[i] = rtt;
    }
    if (atomic_load(&running))
        send_request(m, d);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* This process's CPU time so far (user + system, every thread), in µs. */
static int64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

/* Another process's CPU time so far (user + system), in µs; 0 if unknown. */
static int64_t process_cpu_us(int pid)
{
    char path[64], text[1024];
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    /* Fields 14 and 15 (utime, stime), counted after the command name,
     * which is in parentheses and may hold spaces. */
    const char *p = strrchr(text, ')');
    unsigned long long utime = 0, stime = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return 0;
    return (int64_t)((utime + stime) * 1000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

static int run_client(const options *o)
{
    int n_threads = o->threads < 1 ? 1 : o->threads > MAX_THREADS ? MAX_THREADS : o->threads;
    if (n_threads > o->devices)
        n_threads = o->devices;
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    device *devs = calloc((size_t)o->devices, sizeof *devs);
    driver drivers[MAX_THREADS] = {0};
    if (samples == NULL || devs == NULL)
        return 1;
    for (int t = 0; t < n_threads; t++)
        driver_init(&drivers[t], (size_t)(o->devices / n_threads + 1));
    /* Connect every device first, then start the drivers: only the drivers
     * touch a connection after that. */
    for (int i = 0; i < o->devices; i++) {
        device *d = &devs[i];
        driver *drv = &drivers[i % n_threads];
        char cert[512], key[512];
        snprintf(d->name, sizeof d->name, "bench-%d", i);
        snprintf(d->request_topic, sizeof d->request_topic, "ferry/%s/upload/request", d->name);
        snprintf(d->response_topic, sizeof d->response_topic, "ferry/%s/upload/response", d->name);
        snprintf(cert, sizeof cert, "%s/devices/%s.pem", o->pki, d->name);
        snprintf(key, sizeof key, "%s/devices/%s.key", o->pki, d->name);
        d->c.name = d->name;
        d->c.m = mosquitto_new(d->name, true, d);
        if (d->c.m == NULL)
            return 1;
        configure(d->c.m, o, cert, key);
        mosquitto_connect_v5_callback_set(d->c.m, dev_on_connect);
        mosquitto_subscribe_v5_callback_set(d->c.m, dev_on_subscribe);
        mosquitto_message_v5_callback_set(d->c.m, dev_on_message);
        connect_conn(drv, &d->c, o->port);
        drv->conns[drv->n_conns++] = &d->c;
    }
    for (int t = 0; t < n_threads; t++)
        if (pthread_create(&drivers[t].thread, NULL, drive, &drivers[t]) != 0)
            return 1;
    double warmup = o->seconds / 4;
    sleep_s(warmup);
    atomic_store(&recording, true);
    int64_t t0 = now_ns(), cpu0 = cpu_us();
    int64_t broker0 = process_cpu_us(o->broker_pid), responder0 = process_cpu_us(o->responder_pid);
    sleep_s(o->seconds - warmup);
    atomic_store(&recording, false);
    int64_t t1 = now_ns(), cpu1 = cpu_us();
    int64_t broker1 = process_cpu_us(o->broker_pid), responder1 = process_cpu_us(o->responder_pid);
    atomic_store(&running, false);
    sleep_s(0.2);
    atomic_store(&driving, false);
    for (int t = 0; t < n_threads; t++)
        pthread_join(drivers[t].thread, NULL);
    for (int i = 0; i < o->devices; i++) {
        /* Sent at once: nothing else is queued any more. */
        mosquitto_disconnect_v5(devs[i].c.m, 0, NULL);
        (void)mosquitto_loop_write(devs[i].c.m, 1);
        mosquitto_destroy(devs[i].c.m);
    }
    for (int t = 0; t < n_threads; t++)
        driver_cleanup(&drivers[t]);
    unsigned n = atomic_load(&n_samples);
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    if (n == 0) {
        fprintf(stderr, "bench: no answers received\n");
        return 1;
    }
    qsort(samples, n, sizeof *samples, cmp_i64);
    double per_s = (double)n / ((double)(t1 - t0) / 1e9);
    printf("rtt: n=%u p50_us=%.0f p99_us=%.0f per_s=%.0f cpu_us=%.1f broker_cpu_us=%.1f"
           " responder_cpu_us=%.1f\n",
           n, (double)samples[n / 2] / 1000.0, (double)samples[(size_t)n * 99 / 100] / 1000.0,
           per_s, (double)(cpu1 - cpu0) / n, (double)(broker1 - broker0) / n,
           (double)(responder1 - responder0) / n);
    free(samples);
    free(devs);
    return 0;
}

int main(int argc, char **argv)
{
    options o = {.devices = 1, .threads = 1, .seconds = 4};
    if (argc < 2) {
        fprintf(stderr, "usage: ferry_bench_grants echo|client [options]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--port") == 0)
            o.port = atoi(v);
        else if (strcmp(a, "--ca") == 0)
            o.ca = v;
        else if (strcmp(a, "--cert") == 0)
            o.cert = v;
        else if (strcmp(a, "--key") == 0)
            o.key = v;
        else if (strcmp(a, "--pki") == 0)
            o.pki = v;
        else if (strcmp(a, "--devices") == 0)
            o.devices = atoi(v);
        else if (strcmp(a, "--threads") == 0)
            o.threads = atoi(v);
        else if (strcmp(a, "--broker-pid") == 0)
            o.broker_pid = atoi(v);
        else if (strcmp(a, "--responder-pid") == 0)
            o.responder_pid = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            o.seconds = atof(v);
        else {
            fprintf(stderr, "bench: unknown option %s\n", a);
            return 2;
        }
    }
    if (o.devices < 1) {
        fprintf(stderr, "bench: --devices must be at least 1\n");
        return 2;
    }
    mosquitto_lib_init();
    int rc = strcmp(argv[1], "echo") == 0 ? run_echo(&o) : run_client(&o);
    mosquitto_lib_cleanup();
    return rc;
}
