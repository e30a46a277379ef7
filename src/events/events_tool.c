/*
 * events_tool.c - drives the events library from the command line, for the
 * integration tests (tests/integration/test_events_*.py) and for operators
 * trying a target by hand.
 *
 *   events_tool format            < object.json   prints the S3 event
 *   events_tool receipt           < object.json   prints the receipt message
 *   events_tool processed [--target NAME] --result FILE < object.json
 *   events_tool webhook --url URL [--cafile F] --secret-file F [common] < event.json
 *   events_tool command [--stdout-max N] [--grace-ms N] [common] -- PROG ARG... < event.json
 *   events_tool mqtt --host H --port P --cafile F --cert F --key F --client-id ID
 *                    --topic T [--v311] [common] < event.json
 *   common: [--timeout-ms N] [--event-id ID] [--attempts N] [--repeat N [--threads T]]
 *           [--retry-min-ms N] [--retry-max-ms N]
 *
 * object.json has the fields of events_object (docs/events.md). A delivery
 * is tried up to --attempts times with the library's retry policy (sleeping
 * in between) and ends with one JSON line on stdout:
 *   {"outcome":"delivered","attempts":2,"detail":"HTTP 200","result":{...}}
 * Exit status: 0 delivered, 1 still failing after the attempts (it would be
 * retried later), 2 failed for good or dead-lettered, 3 usage or setup error.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "broker/broker_link.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "events.h"

#define TOOL_MAX_INPUT (1024 * 1024)
#define MAX_THREADS    16

typedef struct options {
    const char *url, *cafile, *secret_file, *event_id, *host, *cert, *key, *client_id, *topic;
    const char *target_name, *result_file;
    int port;
    bool v311;
    int64_t timeout_ms, grace_ms, retry_min_ms, retry_max_ms;
    size_t stdout_max;
    unsigned attempts;
    uint64_t repeat;         /* > 0: throughput run, this many deliveries */
    unsigned threads;        /* for the throughput run */
    const char *const *argv; /* command */
} options;

static int usage(void)
{
    fprintf(stderr, "usage: events_tool format|receipt|processed|webhook|command|mqtt [options]"
                    " (see the top of src/events/events_tool.c)\n");
    return 3;
}

static ferry_err read_file(const char *path, ferry_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return FERRY_ERR_IO;
    ferry_err err = ferry_read_stream(f, out);
    fclose(f);
    return err;
}

static const char *jstr(json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

/* object.json -> events_object (strings borrowed from the json tree). */
static ferry_err object_from_json(json_t *o, events_object *obj)
{
    if (!json_is_object(o))
        return FERRY_ERR_INVALID;
    memset(obj, 0, sizeof *obj);
    obj->event_id = jstr(o, "event_id");
    obj->sequencer = (uint64_t)json_integer_value(json_object_get(o, "sequencer"));
    const char *method = jstr(o, "method");
    obj->method = method == NULL || strcmp(method, "put") == 0 ? EVENTS_PUT
                  : strcmp(method, "post") == 0                ? EVENTS_POST
                  : strcmp(method, "multipart") == 0           ? EVENTS_MULTIPART
                                                               : (events_method)99;
    obj->time_ms = (int64_t)json_integer_value(json_object_get(o, "time_ms"));
    obj->region = jstr(o, "region");
    obj->bucket = jstr(o, "bucket");
    obj->key = jstr(o, "key");
    obj->size = (int64_t)json_integer_value(json_object_get(o, "size"));
    obj->etag = jstr(o, "etag");
    obj->device = jstr(o, "device");
    obj->grant = jstr(o, "grant");
    obj->sha256 = jstr(o, "sha256");
    obj->content_type = jstr(o, "content_type");
    obj->request_id = jstr(o, "request_id");
    obj->source_ip = jstr(o, "source_ip");
    obj->store_request_id = jstr(o, "store_request_id");
    obj->event_source = jstr(o, "event_source");
    obj->configuration_id = jstr(o, "configuration_id");
    obj->bucket_owner = jstr(o, "bucket_owner");
    return FERRY_OK;
}

static int build_message(const char *what, const options *opt, const ferry_buf *input)
{
    int status = 3;
    json_error_t jerr;
    ferry_buf out, result;
    ferry_buf_init(&out, 256 * 1024);
    ferry_buf_init(&result, TOOL_MAX_INPUT);
    events_object obj;
    json_t *o = json_loadb(ferry_buf_str(input), input->len, 0, &jerr);
    ferry_err err = object_from_json(o, &obj);
    if (err == FERRY_OK) {
        if (strcmp(what, "format") == 0) {
            err = events_format(&obj, &out);
        } else if (strcmp(what, "receipt") == 0) {
            err = events_receipt(&obj, &out);
        } else {
            err = opt->result_file ? read_file(opt->result_file, &result) : FERRY_OK;
            if (err == FERRY_OK)
                err = events_processed(&obj, opt->target_name, ferry_buf_str(&result), result.len,
                                       &out);
        }
    }
    if (err != FERRY_OK) {
        fprintf(stderr, "events_tool %s: %s\n", what, ferry_err_str(err));
        status = 2;
    } else {
        fwrite(ferry_buf_str(&out), 1, out.len, stdout);
        fputc('\n', stdout);
        status = 0;
    }
    json_decref(o);
    ferry_buf_cleanup(&out);
    ferry_buf_cleanup(&result);
    return status;
}

static double random_unit(void)
{
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        return 0.5;
    return (double)r / 4294967296.0;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The event id: --event-id, else Records[0].ferry.event_id. */
static const char *find_event_id(const options *opt, json_t *event)
{
    if (opt->event_id != NULL)
        return opt->event_id;
    json_t *rec = json_array_get(json_object_get(event, "Records"), 0);
    return jstr(json_object_get(rec, "ferry"), "event_id");
}

static int run_deliveries(events_target *target, const options *opt, const ferry_buf *input)
{
    json_error_t jerr;
    json_t *event = json_loadb(ferry_buf_str(input), input->len, 0, &jerr);
    const char *event_id = find_event_id(opt, event);
    events_retry_policy policy = {
        .min_ms = opt->retry_min_ms, .max_ms = opt->retry_max_ms, .max_attempts = opt->attempts};
    events_delivery d;
    events_delivery_init(&d);
    unsigned attempts = 0;
    const char *final = "retry";
    int status = 1;
    if (event_id == NULL) {
        fprintf(stderr, "events_tool: no event id (--event-id, or Records[0].ferry.event_id)\n");
        json_decref(event);
        return 3;
    }
    for (;;) {
        attempts++;
        ferry_err err = events_target_deliver(target, event_id, ferry_buf_str(input), input->len,
                                              opt->timeout_ms, &d);
        if (err != FERRY_OK) {
            events_delivery_cleanup(&d);
            d.outcome = EVENTS_RETRY_LATER;
            snprintf(d.detail, sizeof d.detail, "%s", ferry_err_str(err));
        }
        log_info("events.attempt", "target=%s event=%s attempt=%u outcome=%s detail=\"%s\"",
                 events_target_name(target), event_id, attempts, events_outcome_name(d.outcome),
                 d.detail);
        if (d.outcome == EVENTS_DELIVERED) {
            final = "delivered";
            status = 0;
            break;
        }
        if (d.outcome == EVENTS_FAILED) {
            final = "failed";
            status = 2;
            break;
        }
        int64_t now = ferry_time_mono_ns() / 1000000, next = 0;
        if (events_next_attempt(&policy, attempts, now, random_unit(), &next) ==
            EVENTS_NEXT_DEAD_LETTER) {
            final = attempts >= opt->attempts && opt->attempts > 1 ? "dead-letter" : "retry";
            status = strcmp(final, "dead-letter") == 0 ? 2 : 1;
            break;
        }
        sleep_ms(next - now);
    }
    json_t *report =
        json_pack("{s:s,s:i,s:s,s:s}", "outcome", final, "attempts", (json_int_t)attempts, "detail",
                  d.detail, "last", events_outcome_name(d.outcome));
    if (report != NULL && d.result_json != NULL) {
        json_t *r = json_loadb(d.result_json, d.result_len, 0, &jerr);
        if (r != NULL)
            json_object_set_new(report, "result", r);
    }
    char *text = report ? json_dumps(report, JSON_COMPACT) : NULL;
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    json_decref(report);
    json_decref(event);
    events_delivery_cleanup(&d);
    return status;
}

/* Throughput run: `repeat` deliveries (one attempt each) spread over the
 * threads, each thread with its own target; event ids are made unique per
 * delivery. Prints {"outcome":"bench","delivered":…,"per_s":…}. */
typedef struct bench_thread {
    pthread_t thread;
    events_target *target;
    const ferry_buf *input;
    const options *opt;
    unsigned index;
    uint64_t count;
    uint64_t delivered;
} bench_thread;

static void *bench_main(void *arg)
{
    bench_thread *b = arg;
    events_delivery d;
    events_delivery_init(&d);
    for (uint64_t i = 0; i < b->count; i++) {
        char id[64];
        snprintf(id, sizeof id, "bench-%u-%llu", b->index, (unsigned long long)i);
        if (events_target_deliver(b->target, id, ferry_buf_str(b->input), b->input->len,
                                  b->opt->timeout_ms, &d) == FERRY_OK &&
            d.outcome == EVENTS_DELIVERED)
            b->delivered++;
    }
    events_delivery_cleanup(&d);
    return NULL;
}

static int run_bench(events_target **targets, unsigned n, const options *opt,
                     const ferry_buf *input)
{
    bench_thread b[MAX_THREADS];
    memset(b, 0, sizeof b);
    int64_t start = ferry_time_mono_ns();
    unsigned started = 0;
    for (unsigned i = 0; i < n; i++) {
        b[i] = (bench_thread){.target = targets[i],
                              .input = input,
                              .opt = opt,
                              .index = i,
                              .count = opt->repeat / n + (i < opt->repeat % n ? 1 : 0)};
        if (pthread_create(&b[i].thread, NULL, bench_main, &b[i]) != 0)
            break;
        started++;
    }
    uint64_t delivered = 0;
    for (unsigned i = 0; i < started; i++) {
        pthread_join(b[i].thread, NULL);
        delivered += b[i].delivered;
    }
    double seconds = (double)(ferry_time_mono_ns() - start) / 1e9;
    printf("{\"outcome\":\"bench\",\"threads\":%u,\"delivered\":%llu,\"seconds\":%.3f,"
           "\"per_s\":%.0f}\n",
           started, (unsigned long long)delivered, seconds,
           seconds > 0 ? (double)delivered / seconds : 0.0);
    return delivered == opt->repeat ? 0 : 1;
}

static bool parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0)
        return false;
    *out = v;
    return true;
}

static void on_message(void *ctx, broker_link *link, const broker_message *msg)
{
    (void)ctx;
    (void)link;
    (void)msg;
}

int main(int argc, char **argv)
{
    options opt = {.timeout_ms = 10000,
                   .attempts = 1,
                   .retry_min_ms = 200,
                   .retry_max_ms = 2000,
                   .threads = 1};
    int status = 3;
    events_target *targets[MAX_THREADS] = {NULL};
    broker_link *link = NULL;
    ferry_buf input, secret;
    ferry_buf_init(&input, TOOL_MAX_INPUT);
    ferry_buf_init(&secret, 1024);
    if (argc < 2)
        return usage();
    const char *mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            opt.argv = (const char *const *)&argv[i + 1];
            break;
        }
        if (strcmp(a, "--v311") == 0) {
            opt.v311 = true;
            continue;
        }
        if (i + 1 >= argc)
            return usage();
        const char *v = argv[++i];
        int64_t n = 0;
        if (strcmp(a, "--url") == 0)
            opt.url = v;
        else if (strcmp(a, "--cafile") == 0)
            opt.cafile = v;
        else if (strcmp(a, "--secret-file") == 0)
            opt.secret_file = v;
        else if (strcmp(a, "--event-id") == 0)
            opt.event_id = v;
        else if (strcmp(a, "--host") == 0)
            opt.host = v;
        else if (strcmp(a, "--cert") == 0)
            opt.cert = v;
        else if (strcmp(a, "--key") == 0)
            opt.key = v;
        else if (strcmp(a, "--client-id") == 0)
            opt.client_id = v;
        else if (strcmp(a, "--topic") == 0)
            opt.topic = v;
        else if (strcmp(a, "--target") == 0)
            opt.target_name = v;
        else if (strcmp(a, "--result") == 0)
            opt.result_file = v;
        else if (!parse_i64(v, &n))
            return usage();
        else if (strcmp(a, "--port") == 0 && n < 65536)
            opt.port = (int)n;
        else if (strcmp(a, "--timeout-ms") == 0 && n > 0)
            opt.timeout_ms = n;
        else if (strcmp(a, "--grace-ms") == 0)
            opt.grace_ms = n;
        else if (strcmp(a, "--retry-min-ms") == 0)
            opt.retry_min_ms = n;
        else if (strcmp(a, "--retry-max-ms") == 0)
            opt.retry_max_ms = n;
        else if (strcmp(a, "--attempts") == 0 && n > 0 && n < 1000)
            opt.attempts = (unsigned)n;
        else if (strcmp(a, "--repeat") == 0 && n <= 10000000)
            opt.repeat = (uint64_t)n;
        else if (strcmp(a, "--threads") == 0 && n >= 1 && n <= MAX_THREADS)
            opt.threads = (unsigned)n;
        else if (strcmp(a, "--stdout-max") == 0)
            opt.stdout_max = (size_t)n;
        else
            return usage();
    }
    if (ferry_read_stream(stdin, &input) != FERRY_OK) {
        fprintf(stderr, "events_tool: cannot read stdin (or over %d bytes)\n", TOOL_MAX_INPUT);
        goto out;
    }
    if (strcmp(mode, "format") == 0 || strcmp(mode, "receipt") == 0 ||
        strcmp(mode, "processed") == 0) {
        status = build_message(mode, &opt, &input);
        goto out;
    }

    ferry_err err = FERRY_OK;
    unsigned n_targets = opt.repeat > 0 ? opt.threads : 1;
    if (strcmp(mode, "webhook") == 0) {
        if (opt.url == NULL || opt.secret_file == NULL ||
            read_file(opt.secret_file, &secret) != FERRY_OK) {
            fprintf(stderr, "events_tool webhook: --url and a readable --secret-file needed\n");
            goto out;
        }
    } else if (strcmp(mode, "command") == 0) {
        if (opt.argv == NULL || opt.argv[0] == NULL) {
            status = usage();
            goto out;
        }
    } else if (strcmp(mode, "mqtt") == 0) {
        broker_link_config c = {.host = opt.host,
                                .port = opt.port,
                                .cafile = opt.cafile,
                                .certfile = opt.cert,
                                .keyfile = opt.key,
                                .client_id = opt.client_id,
                                .protocol = opt.v311 ? BROKER_PROTOCOL_V311 : BROKER_PROTOCOL_V5,
                                .reconnect_min_ms = 100,
                                .reconnect_max_ms = 1000,
                                .on_message = on_message};
        err = broker_link_new(&c, &link);
        if (err == FERRY_OK)
            err = broker_link_start(link);
        /* libmosquitto refuses publishes before the first connection;
         * give it the delivery timeout to come up (ferryd's link is long
         * connected when its outbox runs). */
        int64_t until = ferry_time_mono_ns() / 1000000 + opt.timeout_ms;
        while (err == FERRY_OK && !broker_link_is_connected(link) &&
               ferry_time_mono_ns() / 1000000 < until)
            sleep_ms(10);
    } else {
        status = usage();
        goto out;
    }
    /* One target per thread (a target is driven by one thread at a time);
     * MQTT targets share the one link, as in ferryd. */
    for (unsigned i = 0; i < n_targets && err == FERRY_OK; i++) {
        if (strcmp(mode, "webhook") == 0) {
            events_webhook_config c = {.name = "webhook",
                                       .url = opt.url,
                                       .cafile = opt.cafile,
                                       .secret = (const unsigned char *)ferry_buf_str(&secret),
                                       .secret_len = secret.len};
            err = events_webhook_new(&c, &targets[i]);
        } else if (strcmp(mode, "command") == 0) {
            events_command_config c = {.name = "command",
                                       .argv = opt.argv,
                                       .stdout_max = opt.stdout_max,
                                       .kill_grace_ms = opt.grace_ms};
            err = events_command_new(&c, &targets[i]);
        } else {
            events_mqtt_config m = {.name = "mqtt", .link = link, .topic = opt.topic};
            err = events_mqtt_new(&m, &targets[i]);
        }
    }
    if (err != FERRY_OK) {
        fprintf(stderr, "events_tool %s: setup failed: %s\n", mode, ferry_err_str(err));
        goto out;
    }
    status = opt.repeat > 0 ? run_bench(targets, n_targets, &opt, &input)
                            : run_deliveries(targets[0], &opt, &input);
out:
    for (unsigned i = 0; i < MAX_THREADS; i++)
        events_target_free(targets[i]);
    broker_link_stop(link, 2000);
    broker_link_free(link);
    ferry_buf_wipe(&secret);
    ferry_buf_cleanup(&input);
    return status;
}
