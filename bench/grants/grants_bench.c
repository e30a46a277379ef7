/*
 * grants_bench.c - round trips over a real broker with mutual TLS.
 *
 *   ferry_bench_grants echo   --port P --ca CA --cert ferryd.pem --key ferryd.key
 *       a bare responder: subscribes like ferryd and publishes every request
 *       straight back on the device's response topic (the floor to compare
 *       ferryd against: same broker, same TLS, same QoS 1, no work).
 *   ferryd (or the echo) must be running for:
 *   ferry_bench_grants client --port P --ca CA --pki DIR --devices N --seconds S
 *       N devices (DIR/devices/bench-<i>.pem), each in a closed loop: publish
 *       a request, wait for the answer, publish the next. Prints
 *       `rtt: n=… p50_us=… p99_us=… per_s=…` over the samples after a
 *       warm-up of a quarter of the run.
 *
 * Every client sets TCP_NODELAY: with Nagle a loopback round trip takes
 * tens of milliseconds instead of ~100 µs.
 */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#define MAX_SAMPLES (4u << 20)

typedef struct options {
    int port;
    const char *ca, *cert, *key, *pki;
    int devices;
    double seconds;
} options;

typedef struct device {
    struct mosquitto *m;
    char name[32];
    char request_topic[96];
    char response_topic[96];
    int64_t sent_ns;
    unsigned long seq;
} device;

static atomic_bool running = true;
static atomic_bool recording = false;
static atomic_uint n_samples;
static int64_t *samples;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void configure(struct mosquitto *m, const options *o, const char *cert, const char *key)
{
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    if (mosquitto_tls_set(m, o->ca, NULL, cert, key, NULL) != MOSQ_ERR_SUCCESS ||
        mosquitto_tls_opts_set(m, SSL_VERIFY_PEER, "tlsv1.2", NULL) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: TLS setup failed for %s\n", cert);
        exit(1);
    }
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

static int run_echo(const options *o)
{
    struct mosquitto *m = mosquitto_new("ferryd", false, NULL);
    configure(m, o, o->cert, o->key);
    mosquitto_connect_v5_callback_set(m, echo_on_connect);
    mosquitto_message_v5_callback_set(m, echo_on_message);
    if (mosquitto_connect_bind_v5(m, "127.0.0.1", o->port, 30, NULL, NULL) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "echo: cannot connect\n");
        return 1;
    }
    fprintf(stderr, "echo: running\n");
    return mosquitto_loop_forever(m, -1, 1) == MOSQ_ERR_SUCCESS ? 0 : 1;
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
    mosquitto_publish_v5(m, NULL, d->request_topic, n, body, 1, false, NULL);
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

static int run_client(const options *o)
{
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    device *devs = calloc((size_t)o->devices, sizeof *devs);
    if (samples == NULL || devs == NULL)
        return 1;
    for (int i = 0; i < o->devices; i++) {
        device *d = &devs[i];
        char cert[512], key[512];
        snprintf(d->name, sizeof d->name, "bench-%d", i);
        snprintf(d->request_topic, sizeof d->request_topic, "ferry/%s/upload/request", d->name);
        snprintf(d->response_topic, sizeof d->response_topic, "ferry/%s/upload/response", d->name);
        snprintf(cert, sizeof cert, "%s/devices/%s.pem", o->pki, d->name);
        snprintf(key, sizeof key, "%s/devices/%s.key", o->pki, d->name);
        d->m = mosquitto_new(d->name, true, d);
        configure(d->m, o, cert, key);
        mosquitto_connect_v5_callback_set(d->m, dev_on_connect);
        mosquitto_subscribe_v5_callback_set(d->m, dev_on_subscribe);
        mosquitto_message_v5_callback_set(d->m, dev_on_message);
        if (mosquitto_connect_bind_v5(d->m, "127.0.0.1", o->port, 30, NULL, NULL) !=
                MOSQ_ERR_SUCCESS ||
            mosquitto_loop_start(d->m) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "%s: cannot connect\n", d->name);
            return 1;
        }
    }
    double warmup = o->seconds / 4;
    sleep_s(warmup);
    atomic_store(&recording, true);
    int64_t t0 = now_ns();
    sleep_s(o->seconds - warmup);
    atomic_store(&recording, false);
    int64_t t1 = now_ns();
    atomic_store(&running, false);
    sleep_s(0.2);
    for (int i = 0; i < o->devices; i++) {
        mosquitto_disconnect_v5(devs[i].m, 0, NULL);
        mosquitto_loop_stop(devs[i].m, false);
        mosquitto_destroy(devs[i].m);
    }
    unsigned n = atomic_load(&n_samples);
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    if (n == 0) {
        fprintf(stderr, "bench: no answers received\n");
        return 1;
    }
    qsort(samples, n, sizeof *samples, cmp_i64);
    double per_s = (double)n / ((double)(t1 - t0) / 1e9);
    printf("rtt: n=%u p50_us=%.0f p99_us=%.0f per_s=%.0f\n", n, (double)samples[n / 2] / 1000.0,
           (double)samples[(size_t)n * 99 / 100] / 1000.0, per_s);
    free(samples);
    free(devs);
    return 0;
}

int main(int argc, char **argv)
{
    options o = {.devices = 1, .seconds = 4};
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
        else if (strcmp(a, "--seconds") == 0)
            o.seconds = atof(v);
        else {
            fprintf(stderr, "bench: unknown option %s\n", a);
            return 2;
        }
    }
    mosquitto_lib_init();
    int rc = strcmp(argv[1], "echo") == 0 ? run_echo(&o) : run_client(&o);
    mosquitto_lib_cleanup();
    return rc;
}
