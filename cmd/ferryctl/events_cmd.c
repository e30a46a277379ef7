/*
 * events_cmd.c - `ferryctl events`: the outbox's dead-letter list and its
 * replay, straight on the ledger (ferryd need not be stopped: the ledger
 * serialises writers, and a running ferryd's workers pick replayed
 * deliveries up at their next claim).
 *
 *   ferryctl events list-dead --ledger PATH [--target NAME]
 *       one line per dead delivery:
 *       event=ID target=NAME attempts=N key="KEY" device=D error="..."
 *   ferryctl events list --ledger PATH --state pending|delivered|dead [--target NAME]
 *   ferryctl events replay --ledger PATH [--target NAME] [--event ID | --all]
 *       dead -> pending, attempts reset, due now; prints replayed=N
 *
 * Replay asks for --event or --all so that a bare command never resends
 * every dead event by accident.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferryctl.h"
#include "ledger/ledger.h"

static void events_usage(FILE *out)
{
    fprintf(out, "usage: ferryctl events list-dead --ledger PATH [--target NAME]\n"
                 "       ferryctl events list --ledger PATH --state pending|delivered|dead"
                 " [--target NAME]\n"
                 "       ferryctl events replay --ledger PATH [--target NAME]"
                 " (--event ID | --all)\n");
}

static int print_delivery(const ledger_delivery *d, void *arg)
{
    size_t *count = arg;
    printf("event=%s seq=%lld target=%s state=%s attempts=%u device=%s grant=%s key=", d->event.id,
           (long long)d->event.seq, d->target, ledger_delivery_state_str(d->state), d->attempts,
           d->event.device, d->event.grant_id);
    ferryctl_print_quoted(d->event.key);
    printf(" error=");
    ferryctl_print_quoted(d->last_error);
    putchar('\n');
    (*count)++;
    return 0;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ferryctl_events(int argc, char **argv)
{
    const char *ledger_path = NULL, *target = NULL, *event_id = NULL, *state_name = NULL;
    bool all = false;
    int status = 1;
    ledger *l = NULL;
    ferry_err e;

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        events_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    bool list_dead = strcmp(verb, "list-dead") == 0, list = strcmp(verb, "list") == 0,
         replay = strcmp(verb, "replay") == 0;
    if (!list_dead && !list && !replay) {
        fprintf(stderr, "ferryctl events: unknown action '%s'\n", verb);
        events_usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--ledger") == 0 && i + 1 < argc) {
            ledger_path = argv[++i];
        } else if (strcmp(argv[i], "--target") == 0 && i + 1 < argc) {
            target = argv[++i];
        } else if (strcmp(argv[i], "--event") == 0 && i + 1 < argc && replay) {
            event_id = argv[++i];
        } else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc && list) {
            state_name = argv[++i];
        } else if (strcmp(argv[i], "--all") == 0 && replay) {
            all = true;
        } else {
            fprintf(stderr, "ferryctl events: unexpected argument '%s'\n", argv[i]);
            events_usage(stderr);
            return 2;
        }
    }
    if (ledger_path == NULL || (replay && (event_id == NULL) == !all) ||
        (list && state_name == NULL)) {
        events_usage(stderr);
        return 2;
    }
    ledger_delivery_state state = LEDGER_DELIVERY_DEAD;
    if (list) {
        if (strcmp(state_name, "pending") == 0)
            state = LEDGER_DELIVERY_PENDING;
        else if (strcmp(state_name, "delivered") == 0)
            state = LEDGER_DELIVERY_DELIVERED;
        else if (strcmp(state_name, "dead") != 0) {
            fprintf(stderr, "ferryctl events: --state: \"%s\" is not pending, delivered or dead\n",
                    state_name);
            return 2;
        }
    }

    if ((e = ledger_open(ledger_path, &l)) != FERRY_OK) {
        fprintf(stderr, "ferryctl events: %s: cannot open the ledger: %s\n", ledger_path,
                ferry_err_str(e));
        goto out;
    }
    if (replay) {
        uint64_t moved = 0;
        e = ledger_delivery_replay(l, target, event_id, wall_ms(), &moved);
        if (e != FERRY_OK) {
            fprintf(stderr, "ferryctl events: replay failed: %s\n", ferry_err_str(e));
            goto out;
        }
        printf("replayed=%llu\n", (unsigned long long)moved);
        status = 0;
        goto out;
    }
    /* One walk in event order; rows are printed as they are read, so a
     * long list costs no memory. */
    size_t count = 0;
    e = ledger_delivery_list(l, state, target, 0, SIZE_MAX, print_delivery, &count);
    if (e != FERRY_OK) {
        fprintf(stderr, "ferryctl events: list failed: %s\n", ferry_err_str(e));
        goto out;
    }
    status = 0;
out:
    ledger_close(l);
    return status;
}
