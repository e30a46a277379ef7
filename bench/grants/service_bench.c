/*
 * service_bench.c - the grant service alone, without the broker: requests
 * per second through grant_service_handle_batch() with a real SQLite ledger
 * (ledger_sync normal, as ferryd runs it), for batch sizes 1 and 64, in
 * its two steps: deciding (everything up to the answers, which ferryd
 * publishes then with the embedded store) and the ledger commit; and one
 * request at a time with 8 batches staged per commit (ferryd's group
 * commit across batches, [ferryd] commit_delay, for one busy device).
 *   ferry_bench_service DIR   (DIR: an empty temp dir for the ledger)
 * Prints `service: batch=N staged=K per_s=… us_per_request=… decide_us=…
 * commit_us=…` lines (decide and stage + commit per request).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/timefmt.h"
#include "daemon/grant_service.h"

static int64_t decide_ns, commit_ns; /* of the last run() */

static double run(grant_service *svc, size_t batch, int staged, int total)
{
    decide_ns = commit_ns = 0;
    grant_service_input in[GRANT_BATCH_MAX];
    grant_answer answers[GRANT_BATCH_MAX];
    ferry_err results[GRANT_BATCH_MAX];
    char topics[GRANT_BATCH_MAX][64], bodies[GRANT_BATCH_MAX][160];
    int64_t t0 = ferry_time_mono_ns();
    for (int done = 0; done < total; done += (int)batch) {
        for (size_t i = 0; i < batch; i++) {
            snprintf(topics[i], sizeof topics[i], "ferry/dev-%zu/upload/request", i);
            int n = snprintf(bodies[i], sizeof bodies[i],
                             "{\"id\":\"r-%d\",\"name\":\"bench.bin\",\"size\":1024,"
                             "\"content_type\":\"application/octet-stream\"}",
                             done + (int)i);
            in[i] = (grant_service_input){
                .topic = topics[i], .payload = bodies[i], .payload_len = (size_t)n, .is_v5 = true};
        }
        int64_t t1 = ferry_time_mono_ns();
        if (grant_service_decide_batch(svc, in, batch, ferry_time_now(), ferry_time_mono_ns(),
                                       answers, results) != FERRY_OK)
            exit(1);
        int64_t t2 = ferry_time_mono_ns();
        bool last = (done / (int)batch) % staged == staged - 1 || done + (int)batch >= total;
        if ((last ? grant_service_commit_batch(svc, NULL) : grant_service_stage_batch(svc, NULL)) !=
            FERRY_OK)
            exit(1);
        decide_ns += t2 - t1;
        commit_ns += ferry_time_mono_ns() - t2;
        for (size_t i = 0; i < batch; i++) {
            if (results[i] != FERRY_OK || !answers[i].granted)
                exit(1);
            grant_answer_cleanup(&answers[i]);
        }
    }
    return (double)total / ((double)(ferry_time_mono_ns() - t0) / 1e9);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    char path[512];
    snprintf(path, sizeof path, "%s/ledger.db", argv[1]);
    ferry_log_set_level(FERRY_LOG_WARN);
    ledger *l = NULL;
    if (ledger_open(path, &l) != FERRY_OK || ledger_set_sync(l, LEDGER_SYNC_NORMAL) != FERRY_OK)
        return 1;
    grant_policy fleet;
    grant_policy_defaults(&fleet);
    fleet.max_open_grants = 0;
    fleet.rate_per_s = 0;
    fleet.daily_quota_bytes = 0;
    strcpy(fleet.content_types, "*/*");
    grant_service_config cfg = {.prefix = "ferry",
                                .endpoint = "https://127.0.0.1:9443",
                                .bucket = "ingest",
                                .region = "us-east-1",
                                .access_key = "ferry-grants",
                                .secret = "bench-secret",
                                .fleet = &fleet,
                                .rate_table_size = 1024,
                                .ledger = l};
    grant_service *svc = NULL;
    if (grant_service_new(&cfg, &svc) != FERRY_OK)
        return 1;
    static const struct {
        size_t batch;
        int staged;
    } modes[] = {{1, 1}, {1, 8}, {64, 1}};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        double per_s = run(svc, modes[m].batch, modes[m].staged, 20000);
        printf("service: batch=%zu staged=%d per_s=%.0f us_per_request=%.1f decide_us=%.1f "
               "commit_us=%.1f\n",
               modes[m].batch, modes[m].staged, per_s, 1e6 / per_s,
               (double)decide_ns / 1e3 / 20000.0, (double)commit_ns / 1e3 / 20000.0);
    }
    grant_service_free(svc);
    ledger_close(l);
    return 0;
}
