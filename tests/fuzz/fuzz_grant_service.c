/*
 * fuzz_grant_service.c - one MQTT request end to end through the grant
 * service: the topic (device id extraction), the payload (the request
 * parser) and the MQTT 5 Response Topic, all from the fuzzer's bytes, with a
 * real SQLite ledger in a temporary directory and the real signer.
 *
 * Input layout: topic '\n' response-topic '\n' payload. An empty response
 * topic means none (MQTT 3.1.1-like). Every answer must be well-formed JSON
 * under 128 KB and go to a topic of the same device.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/grant_service.h"

static grant_service *svc;
static ledger *led;
static int64_t mono_ns = 1;

static char dir[] = "/tmp/ferry-fuzz-gs-XXXXXX";

/* At exit: the ledger closed and its directory removed, so that the
 * replays of every test run leave nothing in /tmp. */
static void teardown(void)
{
    static const char *const files[] = {"ledger.db", "ledger.db-wal", "ledger.db-shm"};
    char path[64];
    grant_service_free(svc);
    ledger_close(led);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void setup(void)
{
    char path[64];
    if (mkdtemp(dir) == NULL)
        abort();
    atexit(teardown);
    snprintf(path, sizeof path, "%s/ledger.db", dir);
    ferry_log_set_level(FERRY_LOG_ERROR);
    if (ledger_open(path, &led) != FERRY_OK || ledger_set_sync(led, LEDGER_SYNC_NORMAL))
        abort();
    static grant_policy fleet;
    grant_policy_defaults(&fleet);
    strcpy(fleet.content_types, "*/*");
    fleet.rate_per_s = 0;
    fleet.max_open_grants = 0;
    grant_service_config cfg = {.prefix = "ferry", .endpoint = "https://127.0.0.1:9443",
                                .bucket = "ingest", .region = "us-east-1",
                                .access_key = "fuzz", .secret = "fuzz-secret", .fleet = &fleet,
                                .rate_table_size = 64, .ledger = led};
    if (grant_service_new(&cfg, &svc) != FERRY_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (svc == NULL)
        setup();
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *topic = buf;
    char *nl = memchr(buf, '\n', size);
    if (nl == NULL) {
        free(buf);
        return 0;
    }
    *nl = '\0';
    char *response = nl + 1;
    char *nl2 = memchr(response, '\n', size - (size_t)(response - buf));
    if (nl2 == NULL) {
        free(buf);
        return 0;
    }
    *nl2 = '\0';
    char *payload = nl2 + 1;
    size_t payload_len = size - (size_t)(payload - buf);

    grant_service_input in = {.topic = topic, .payload = payload, .payload_len = payload_len,
                              .is_v5 = *response != '\0',
                              .response_topic = *response ? response : NULL};
    grant_answer answer;
    mono_ns += 1000000;
    ferry_err e = grant_service_handle(svc, &in, 1764072000, mono_ns, &answer);
    if (e == FERRY_OK) {
        json_error_t jerr;
        json_t *doc = json_loadb(answer.json, answer.json_len, JSON_REJECT_DUPLICATES, &jerr);
        if (doc == NULL || answer.json_len > GRANT_ANSWER_MAX_BYTES)
            abort();
        /* The answer goes to the requesting device's own subtree. */
        char device[GRANT_DEVICE_MAX + 1], prefix[GRANT_DEVICE_MAX + 16];
        if (grant_service_topic_device("ferry", topic, device, sizeof device) != FERRY_OK)
            abort();
        snprintf(prefix, sizeof prefix, "ferry/%s/", device);
        if (strncmp(answer.topic, prefix, strlen(prefix)) != 0)
            abort();
        json_decref(doc);
        grant_answer_cleanup(&answer);
    } else if (e != FERRY_ERR_INVALID) {
        abort();
    }
    free(buf);
    return 0;
}
