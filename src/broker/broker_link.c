/*
 * broker_link.c - the MQTT link: libmosquitto with our own network thread.
 *
 * Why our own thread instead of mosquitto_loop_forever(): libmosquitto's
 * reconnect delay has no jitter, and a fleet of ferryd restarted together
 * would hammer the broker in step. The thread below does the backoff
 * itself, and drives the connection with libmosquitto's external-loop calls
 * (poll on mosquitto_socket(), mosquitto_loop_read/_write/_misc) rather
 * than mosquitto_loop(), for the order of one turn: read what arrived, let
 * the handler answer it (on_loop_end), then write everything queued at once,
 * the PUBACKs of the requests together with the answers. mosquitto_loop()
 * writes the PUBACKs before the handler runs, which put a TCP send on every
 * answer's path, and wakes on its socket pair once per queued packet (one
 * extra select and read per request). Publishes from other threads (the
 * outbox) wake the thread through `wake_fd`, an eventfd, instead. Every
 * (re)connect calls mosquitto_connect_bind_v5() with the session-expiry
 * property again, so an MQTT 5 session is resumed with the same expiry each
 * time.
 *
 * Invariants: only the network thread connects, loops and disconnects; any
 * thread may publish (libmosquitto's own locks cover that, and the socket
 * pair wakes the loop). `inflight` counts QoS 1 publishes not yet
 * acknowledged; stop waits for it to reach zero before disconnecting.
 *
 * broker_link_publish_acked() registers a waiter for its message id under
 * `ack_lock`, which it holds across mosquitto_publish_v5() so the PUBACK
 * cannot be handled before the waiter exists (libmosquitto calls
 * on_publish after releasing its message lists, and publishing from
 * another thread only queues the packet, so the two locks never cross).
 * An ack set (broker_ack_set_*) is the same idea for many messages: it is
 * in `sets` from _new to _free, each publish records its message id under
 * `ack_lock`, and on_publish marks the entry and wakes the set's owner when
 * the last one is in.
 */
#include "broker_link.h"
#include "broker_io.h"

#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "common/timefmt.h"

struct broker_link {
    struct mosquitto *mosq;
    char *host, *cafile, *certfile, *keyfile, *client_id;
    char **subscriptions;
    size_t subscription_count;
    int port;
    int keepalive_s;
    broker_protocol protocol;
    int64_t reconnect_min_ms, reconnect_max_ms;
    uint32_t session_expiry_s;
    broker_message_fn on_message;
    broker_loop_fn on_loop_end;
    void *ctx;

    pthread_t thread;
    bool thread_started;
    int wake_fd; /* eventfd: a publish from another thread wakes the network thread */
    atomic_bool stopping;
    atomic_llong drain_deadline_ns;
    atomic_bool connected;
    atomic_int version;           /* 5 or 4 */
    atomic_bool fallback_pending; /* CONNACK refused MQTT 5: retry with 3.1.1 */
    atomic_bool reset_backoff;
    atomic_ullong connect_count;
    atomic_long inflight;
    uint64_t received;   /* messages passed to on_message; network thread only */
    int loop_timeout_ms; /* the next wait for input; network thread only */

    /* Publishers waiting for the PUBACK of one message (publish_acked). */
    pthread_mutex_t ack_lock;
    pthread_condattr_t ack_condattr; /* CLOCK_MONOTONIC, for each waiter's cond */
    struct ack_waiter *waiters;
    struct broker_ack_set *sets;
    bool ack_init;
};

/* One per publish_acked() call, on its stack; its own condition variable
 * so a PUBACK wakes only the thread that waits for it. */
typedef struct ack_waiter {
    pthread_cond_t cond;
    int mid;
    bool done;
    int reason_code;
    struct ack_waiter *next;
} ack_waiter;

/* One message of an ack set. */
typedef struct ack_entry {
    int mid;
    int reason_code;
    bool done;
} ack_entry;

/* Fields below `link` are guarded by link->ack_lock. */
struct broker_ack_set {
    broker_link *link;
    pthread_cond_t cond; /* signalled when pending reaches 0 */
    ack_entry *entries;
    size_t capacity;
    size_t count;     /* published since the last reset */
    size_t pending;   /* of those, still without PUBACK */
    size_t scan_from; /* entries before it are all done: PUBACKs come
                         mostly in publish order, so the search is short */
    struct broker_ack_set *next;
};

int64_t broker_backoff_ms(int64_t min_ms, int64_t max_ms, unsigned attempt, double random01)
{
    if (min_ms < 1)
        min_ms = 1;
    if (max_ms < min_ms)
        max_ms = min_ms;
    int64_t d = min_ms;
    for (unsigned i = 0; i < attempt && d < max_ms; i++)
        d = d > max_ms / 2 ? max_ms : d * 2;
    if (d > max_ms)
        d = max_ms;
    if (random01 < 0)
        random01 = 0;
    if (random01 >= 1)
        random01 = 0.999999;
    return d / 2 + (int64_t)((double)(d - d / 2) * random01);
}

static double random_unit(void)
{
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        return 0.5;
    return (double)r / 4294967296.0;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
    (void)props;
    broker_link *link = obj;
    int version = atomic_load(&link->version);
    if (rc != 0) {
        bool refused_v5 = version == 5 && (rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION ||
                                           rc == CONNACK_REFUSED_PROTOCOL_VERSION);
        if (refused_v5 && link->protocol == BROKER_PROTOCOL_AUTO) {
            log_warn("broker.fallback", "reason=\"broker refused MQTT 5\" next=3.1.1");
            atomic_store(&link->fallback_pending, true);
        } else {
            log_error("broker.refused", "rc=%d reason=\"%s\"", rc,
                      version == 5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
        }
        return;
    }
    atomic_store(&link->connected, true);
    atomic_store(&link->reset_backoff, true);
    atomic_fetch_add(&link->connect_count, 1);
    log_info("broker.connected", "host=%s port=%d mqtt=%s session_present=%d", link->host,
             link->port, version == 5 ? "5" : "3.1.1", flags & 1);
    for (size_t i = 0; i < link->subscription_count; i++) {
        int src = mosquitto_subscribe_v5(mosq, NULL, link->subscriptions[i], 1, 0, NULL);
        if (src != MOSQ_ERR_SUCCESS)
            log_error("broker.subscribe_failed", "topic=%s error=\"%s\"", link->subscriptions[i],
                      mosquitto_strerror(src));
    }
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc,
                          const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    broker_link *link = obj;
    bool was = atomic_exchange(&link->connected, false);
    if (was && !atomic_load(&link->stopping))
        log_warn("broker.disconnected", "rc=%d", rc);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int rc,
                       const mosquitto_property *props)
{
    (void)mosq;
    (void)mid;
    (void)props;
    broker_link *link = obj;
    atomic_fetch_sub(&link->inflight, 1);
    /* MQTT 5 reason codes below 0x80 are successes (0x10: no matching
     * subscribers, routine for event topics nobody listens to yet). */
    if (rc >= 0x80)
        log_warn("broker.publish_refused", "mid=%d rc=%d", mid, rc);
    pthread_mutex_lock(&link->ack_lock);
    for (ack_waiter *w = link->waiters; w != NULL; w = w->next) {
        if (w->mid == mid && !w->done) {
            w->done = true;
            w->reason_code = rc;
            pthread_cond_signal(&w->cond);
        }
    }
    for (broker_ack_set *set = link->sets; set != NULL; set = set->next) {
        if (set->pending == 0)
            continue;
        for (size_t i = set->scan_from; i < set->count; i++) {
            ack_entry *e = &set->entries[i];
            if (e->mid != mid || e->done)
                continue;
            e->done = true;
            e->reason_code = rc;
            if (--set->pending == 0)
                pthread_cond_signal(&set->cond);
            break;
        }
        while (set->scan_from < set->count && set->entries[set->scan_from].done)
            set->scan_from++;
    }
    pthread_mutex_unlock(&link->ack_lock);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m,
                       const mosquitto_property *props)
{
    (void)mosq;
    broker_link *link = obj;
    void *correlation = NULL;
    uint16_t correlation_len = 0;
    char *response_topic = NULL;
    bool v5 = atomic_load(&link->version) == 5;
    if (v5 && props != NULL) {
        mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &correlation,
                                       &correlation_len, false);
        mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &response_topic, false);
    }
    broker_message msg = {
        .topic = m->topic,
        .payload = m->payload ? m->payload : "",
        .payload_len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0,
        .is_v5 = v5,
        .correlation_data = correlation,
        .correlation_len = correlation_len,
        .response_topic = response_topic,
    };
    link->received++;
    link->on_message(link->ctx, link, &msg);
    free(correlation);
    free(response_topic);
}

static void on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
    (void)mosq;
    (void)obj;
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
        log_warn("broker.client", "detail=\"%s\"", str);
}

static int do_connect(broker_link *link)
{
    if (atomic_exchange(&link->fallback_pending, false)) {
        mosquitto_int_option(link->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
        atomic_store(&link->version, 4);
    }
    mosquitto_property *props = NULL;
    if (atomic_load(&link->version) == 5)
        mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                     link->session_expiry_s);
    int rc = mosquitto_connect_bind_v5(link->mosq, link->host, link->port, link->keepalive_s, NULL,
                                       props);
    mosquitto_property_free_all(&props);
    return rc;
}

/* Sleeps up to ms, waking early when the link is being stopped. */
static void interruptible_sleep(broker_link *link, int64_t ms)
{
    while (ms > 0 && !atomic_load(&link->stopping)) {
        int64_t step = ms < 50 ? ms : 50;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(step * 1000000)};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static bool drained(broker_link *link)
{
    if (!atomic_load(&link->stopping))
        return false;
    if (atomic_load(&link->inflight) <= 0 || !atomic_load(&link->connected))
        return true;
    return ferry_time_mono_ns() >= atomic_load(&link->drain_deadline_ns);
}

/* Whether more input is already here: in TLS (broker_tls_readable) or on the
 * socket. Checked before each extra drain read, so that a lone request
 * does not pay for a read that would find nothing. */
static bool bytes_waiting(struct mosquitto *mosq)
{
    if (broker_tls_readable(mosquitto_ssl_get(mosq)))
        return true;
    struct pollfd pfd = {.fd = mosquitto_socket(mosq), .events = POLLIN};
    return pfd.fd >= 0 && poll(&pfd, 1, 0) > 0;
}

/* Empties the eventfd (a counter: one read resets it). */
static void drain_wake(broker_link *link)
{
    uint64_t n;
    if (read(link->wake_fd, &n, sizeof n) < 0) {
        /* EAGAIN: nobody woke us; nothing else can fail on an eventfd */
    }
}

/* The first half of a turn: waits up to timeout_ms for input or for a
 * publish of another thread, reads what came (the message handler runs
 * from here) and does libmosquitto's housekeeping (keepalive). Writing is
 * the second half (write_queued), after on_loop_end. */
static int read_turn(broker_link *link, int timeout_ms)
{
    struct mosquitto *mosq = link->mosq;
    SSL *ssl = mosquitto_ssl_get(mosq);
    struct pollfd fds[2] = {
        {.fd = mosquitto_socket(mosq), .events = POLLIN},
        {.fd = link->wake_fd, .events = POLLIN},
    };
    if (fds[0].fd < 0)
        return MOSQ_ERR_NO_CONN;
    if (mosquitto_want_write(mosq))
        fds[0].events |= POLLOUT; /* a write the socket refused earlier */
    bool buffered = broker_tls_readable(ssl);
    int n = poll(fds, 2, buffered ? 0 : timeout_ms);
    if (n < 0 && errno != EINTR)
        return MOSQ_ERR_ERRNO;
    if (n > 0 && (fds[1].revents & POLLIN))
        drain_wake(link);
    if (buffered || (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)))) {
        int rc = mosquitto_loop_read(mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS)
            return rc;
    }
    return mosquitto_loop_misc(mosq);
}

/* The second half of a turn: everything queued goes out (answers,
 * PUBACKs, pings, other threads' publishes), corked (broker_io.h). */
static int write_queued(broker_link *link)
{
    return broker_write_corked(link->mosq);
}

#define LOOP_TIMEOUT_MS 100 /* the network thread's wait for input, by default */

/* In a network thread, its link: a publish from there needs no wake-up. */
static _Thread_local broker_link *own_link;

static void *network_thread(void *arg)
{
    broker_link *link = arg;
    unsigned attempt = 0;
    bool socket_up = false;

    own_link = link;
    while (!drained(link)) {
        if (!socket_up) {
            if (atomic_load(&link->stopping))
                break;
            int rc = do_connect(link);
            if (rc != MOSQ_ERR_SUCCESS) {
                int64_t delay = broker_backoff_ms(link->reconnect_min_ms, link->reconnect_max_ms,
                                                  attempt++, random_unit());
                log_warn("broker.connect_failed", "host=%s port=%d error=\"%s\" retry_in_ms=%lld",
                         link->host, link->port,
                         rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc),
                         (long long)delay);
                interruptible_sleep(link, delay);
                continue;
            }
            socket_up = true;
            /* TLS reads ahead: one read() takes in every record that has
             * arrived, instead of two per record (its header, then its
             * body), and a turn's burst of requests costs a read or two.
             * What it holds counts as input waiting (broker_tls_readable). */
            SSL *ssl = mosquitto_ssl_get(link->mosq);
            if (ssl != NULL)
                SSL_set_read_ahead(ssl, 1);
        }
        uint64_t before = link->received;
        int rc = read_turn(link, link->loop_timeout_ms);
        link->loop_timeout_ms = LOOP_TIMEOUT_MS;
        /* A message arrived: before handing the burst over, drain what else
         * is already waiting on the socket (no waiting), so that under load
         * the handler sees whole batches, not one message per turn. */
        for (int i = 0; i < 64 && rc == MOSQ_ERR_SUCCESS && link->received > before &&
                        bytes_waiting(link->mosq);
             i++) {
            before = link->received;
            rc = mosquitto_loop_read(link->mosq, 1);
        }
        if (link->on_loop_end != NULL)
            link->on_loop_end(link->ctx, link);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = write_queued(link);
        if (atomic_exchange(&link->reset_backoff, false))
            attempt = 0;
        if (rc == MOSQ_ERR_SUCCESS)
            continue;
        socket_up = false;
        atomic_store(&link->connected, false);
        if (atomic_load(&link->stopping))
            break;
        int64_t delay = broker_backoff_ms(link->reconnect_min_ms, link->reconnect_max_ms, attempt++,
                                          random_unit());
        log_warn("broker.connection_lost", "error=\"%s\" retry_in_ms=%lld",
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), (long long)delay);
        interruptible_sleep(link, delay);
    }
    if (socket_up) {
        mosquitto_disconnect_v5(link->mosq, 0, NULL);
        /* Let the DISCONNECT go out. */
        for (int i = 0; i < 5 && mosquitto_loop(link->mosq, 20, 1) == MOSQ_ERR_SUCCESS; i++)
            if (link->on_loop_end != NULL)
                link->on_loop_end(link->ctx, link);
    }
    atomic_store(&link->connected, false);
    return NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

ferry_err broker_link_new(const broker_link_config *config, broker_link **out)
{
    ferry_err result = FERRY_OK;
    broker_link *link = calloc(1, sizeof *link);
    if (link == NULL)
        return FERRY_ERR_NOMEM;
    mosquitto_lib_init();
    link->host = dup_or_null(config->host);
    link->cafile = dup_or_null(config->cafile);
    link->certfile = dup_or_null(config->certfile);
    link->keyfile = dup_or_null(config->keyfile);
    link->client_id = dup_or_null(config->client_id);
    link->port = config->port;
    link->keepalive_s = config->keepalive_s > 0 ? config->keepalive_s : 30;
    link->protocol = config->protocol;
    link->reconnect_min_ms = config->reconnect_min_ms;
    link->reconnect_max_ms = config->reconnect_max_ms;
    link->session_expiry_s = config->session_expiry_s;
    link->on_message = config->on_message;
    link->on_loop_end = config->on_loop_end;
    link->ctx = config->ctx;
    link->loop_timeout_ms = LOOP_TIMEOUT_MS;
    link->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    atomic_store(&link->version, config->protocol == BROKER_PROTOCOL_V311 ? 4 : 5);
    if (link->wake_fd < 0) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    {
        if (pthread_condattr_init(&link->ack_condattr) != 0) {
            result = FERRY_ERR_NOMEM;
            goto out;
        }
        pthread_condattr_setclock(&link->ack_condattr, CLOCK_MONOTONIC);
        if (pthread_mutex_init(&link->ack_lock, NULL) != 0) {
            pthread_condattr_destroy(&link->ack_condattr);
            result = FERRY_ERR_NOMEM;
            goto out;
        }
        link->ack_init = true;
    }
    if (link->host == NULL || link->client_id == NULL || config->on_message == NULL) {
        result = FERRY_ERR_INVALID;
        goto out;
    }
    link->subscriptions = calloc(config->subscription_count + 1, sizeof(char *));
    if (link->subscriptions == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < config->subscription_count; i++) {
        link->subscriptions[i] = strdup(config->subscriptions[i]);
        if (link->subscriptions[i] == NULL) {
            result = FERRY_ERR_NOMEM;
            goto out;
        }
        link->subscription_count++;
    }

    /* clean_session false: the broker keeps our subscription and queues
     * requests for us while we are away. */
    link->mosq = mosquitto_new(link->client_id, false, link);
    if (link->mosq == NULL) {
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    mosquitto_int_option(link->mosq, MOSQ_OPT_PROTOCOL_VERSION,
                         atomic_load(&link->version) == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    /* Without TCP_NODELAY, Nagle turns a 100 µs round trip into ~40-90 ms. */
    mosquitto_int_option(link->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_threaded_set(link->mosq, true);
    mosquitto_connect_v5_callback_set(link->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(link->mosq, on_disconnect);
    mosquitto_publish_v5_callback_set(link->mosq, on_publish);
    mosquitto_message_v5_callback_set(link->mosq, on_message);
    mosquitto_log_callback_set(link->mosq, on_log);
    if (link->cafile != NULL) {
        int rc =
            mosquitto_tls_set(link->mosq, link->cafile, NULL, link->certfile, link->keyfile, NULL);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_tls_opts_set(link->mosq, SSL_VERIFY_PEER, "tlsv1.2", NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            log_error("broker.tls_setup_failed", "error=\"%s\"", mosquitto_strerror(rc));
            result = FERRY_ERR_TLS;
            goto out;
        }
    }
    *out = link;
    link = NULL;
out:
    broker_link_free(link);
    return result;
}

ferry_err broker_link_start(broker_link *link)
{
    if (link->thread_started)
        return FERRY_ERR_INVALID;
    if (pthread_create(&link->thread, NULL, network_thread, link) != 0)
        return FERRY_ERR_NOMEM;
    link->thread_started = true;
    return FERRY_OK;
}

/* broker_link_publish() with the message id written to *mid (may be NULL). */
static ferry_err publish_mid(broker_link *link, const char *topic, const void *payload, size_t len,
                             const broker_publish_options *options, int *mid)
{
    mosquitto_property *props = NULL;
    if (len > INT32_MAX)
        return FERRY_ERR_TOO_LARGE;
    if (options != NULL && atomic_load(&link->version) == 5) {
        if (options->correlation_data != NULL && options->correlation_len > 0 &&
            options->correlation_len <= UINT16_MAX)
            mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA,
                                          options->correlation_data,
                                          (uint16_t)options->correlation_len);
        if (options->message_expiry_s > 0)
            mosquitto_property_add_int32(&props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL,
                                         options->message_expiry_s);
    }
    atomic_fetch_add(&link->inflight, 1);
    int rc = mosquitto_publish_v5(link->mosq, mid, topic, (int)len, payload, 1, false, props);
    mosquitto_property_free_all(&props);
    if (rc == MOSQ_ERR_SUCCESS) {
        /* Only queued: the network thread writes it at the end of its turn,
         * and must be woken if the publisher is another thread. */
        if (own_link != link) {
            uint64_t one = 1;
            if (write(link->wake_fd, &one, sizeof one) < 0) {
                /* EAGAIN: the counter is already far from zero, so set */
            }
        }
        return FERRY_OK;
    }
    atomic_fetch_sub(&link->inflight, 1);
    log_warn("broker.publish_failed", "topic=%s error=\"%s\"", topic, mosquitto_strerror(rc));
    return rc == MOSQ_ERR_NOMEM             ? FERRY_ERR_NOMEM
           : rc == MOSQ_ERR_OVERSIZE_PACKET ? FERRY_ERR_TOO_LARGE
                                            : FERRY_ERR_UNAVAILABLE;
}

ferry_err broker_link_publish(broker_link *link, const char *topic, const void *payload, size_t len,
                              const broker_publish_options *options)
{
    return publish_mid(link, topic, payload, len, options, NULL);
}

void broker_link_flush(broker_link *link)
{
    if (link != NULL && atomic_load(&link->connected))
        (void)broker_write_corked(link->mosq);
}

void broker_link_wake_within(broker_link *link, int ms)
{
    if (link != NULL && ms < link->loop_timeout_ms)
        link->loop_timeout_ms = ms < 1 ? 1 : ms;
}

ferry_err broker_link_publish_acked(broker_link *link, const char *topic, const void *payload,
                                    size_t len, const broker_publish_options *options,
                                    int64_t timeout_ms)
{
    ack_waiter waiter = {.mid = -1};
    struct timespec deadline = ferry_time_mono_deadline(timeout_ms * 1000000);

    if (pthread_cond_init(&waiter.cond, &link->ack_condattr) != 0)
        return FERRY_ERR_NOMEM;
    pthread_mutex_lock(&link->ack_lock);
    ferry_err result = publish_mid(link, topic, payload, len, options, &waiter.mid);
    if (result != FERRY_OK) {
        pthread_mutex_unlock(&link->ack_lock);
        pthread_cond_destroy(&waiter.cond);
        return result;
    }
    waiter.next = link->waiters;
    link->waiters = &waiter;
    while (!waiter.done) {
        int rc = pthread_cond_timedwait(&waiter.cond, &link->ack_lock, &deadline);
        if (rc == ETIMEDOUT)
            break;
    }
    for (ack_waiter **p = &link->waiters; *p != NULL; p = &(*p)->next) {
        if (*p == &waiter) {
            *p = waiter.next;
            break;
        }
    }
    pthread_mutex_unlock(&link->ack_lock);
    pthread_cond_destroy(&waiter.cond);
    if (!waiter.done)
        return FERRY_ERR_TIMEOUT;
    return waiter.reason_code >= 0x80 ? FERRY_ERR_DENIED : FERRY_OK;
}

ferry_err broker_ack_set_new(broker_link *link, size_t capacity, broker_ack_set **out)
{
    ferry_err result = FERRY_OK;
    broker_ack_set *set = NULL;
    if (link == NULL || out == NULL || capacity == 0 || capacity > 4096)
        return FERRY_ERR_INVALID;
    set = calloc(1, sizeof *set);
    if (set == NULL)
        return FERRY_ERR_NOMEM;
    set->link = link;
    set->capacity = capacity;
    set->entries = calloc(capacity, sizeof *set->entries);
    if (set->entries == NULL || pthread_cond_init(&set->cond, &link->ack_condattr) != 0) {
        free(set->entries);
        free(set);
        set = NULL;
        result = FERRY_ERR_NOMEM;
        goto out;
    }
    pthread_mutex_lock(&link->ack_lock);
    set->next = link->sets;
    link->sets = set;
    pthread_mutex_unlock(&link->ack_lock);
    *out = set;
out:
    return result;
}

void broker_ack_set_free(broker_ack_set *set)
{
    if (set == NULL)
        return;
    broker_link *link = set->link;
    pthread_mutex_lock(&link->ack_lock);
    for (broker_ack_set **p = &link->sets; *p != NULL; p = &(*p)->next) {
        if (*p == set) {
            *p = set->next;
            break;
        }
    }
    pthread_mutex_unlock(&link->ack_lock);
    pthread_cond_destroy(&set->cond);
    free(set->entries);
    free(set);
}

ferry_err broker_ack_set_publish(broker_ack_set *set, const char *topic, const void *payload,
                                 size_t len, const broker_publish_options *options, size_t *index)
{
    broker_link *link = set->link;
    int mid = -1;
    ferry_err result = FERRY_OK;

    /* Held across the publish, as in publish_acked(): the PUBACK cannot be
     * handled before the entry exists. */
    pthread_mutex_lock(&link->ack_lock);
    if (set->count == set->capacity) {
        result = FERRY_ERR_RANGE;
        goto out;
    }
    result = publish_mid(link, topic, payload, len, options, &mid);
    if (result != FERRY_OK)
        goto out;
    set->entries[set->count] = (ack_entry){.mid = mid};
    if (index != NULL)
        *index = set->count;
    set->count++;
    set->pending++;
out:
    pthread_mutex_unlock(&link->ack_lock);
    return result;
}

size_t broker_ack_set_wait(broker_ack_set *set, int64_t timeout_ms)
{
    broker_link *link = set->link;
    struct timespec deadline = ferry_time_mono_deadline(timeout_ms * 1000000);
    pthread_mutex_lock(&link->ack_lock);
    while (set->pending > 0) {
        if (pthread_cond_timedwait(&set->cond, &link->ack_lock, &deadline) == ETIMEDOUT)
            break;
    }
    size_t pending = set->pending;
    pthread_mutex_unlock(&link->ack_lock);
    return pending;
}

ferry_err broker_ack_set_result(broker_ack_set *set, size_t index)
{
    broker_link *link = set->link;
    ferry_err result;
    pthread_mutex_lock(&link->ack_lock);
    if (index >= set->count)
        result = FERRY_ERR_INVALID;
    else if (!set->entries[index].done)
        result = FERRY_ERR_TIMEOUT;
    else
        result = set->entries[index].reason_code >= 0x80 ? FERRY_ERR_DENIED : FERRY_OK;
    pthread_mutex_unlock(&link->ack_lock);
    return result;
}

size_t broker_ack_set_count(const broker_ack_set *set)
{
    broker_link *link = set->link;
    pthread_mutex_lock(&link->ack_lock);
    size_t count = set->count;
    pthread_mutex_unlock(&link->ack_lock);
    return count;
}

void broker_ack_set_reset(broker_ack_set *set)
{
    broker_link *link = set->link;
    pthread_mutex_lock(&link->ack_lock);
    set->count = 0;
    set->pending = 0;
    set->scan_from = 0;
    pthread_mutex_unlock(&link->ack_lock);
}

void broker_link_stop(broker_link *link, int64_t timeout_ms)
{
    if (link == NULL || !link->thread_started)
        return;
    atomic_store(&link->drain_deadline_ns, ferry_time_mono_ns() + timeout_ms * 1000000);
    atomic_store(&link->stopping, true);
    pthread_join(link->thread, NULL);
    link->thread_started = false;
}

void broker_link_free(broker_link *link)
{
    if (link == NULL)
        return;
    broker_link_stop(link, 0);
    if (link->mosq != NULL)
        mosquitto_destroy(link->mosq);
    for (size_t i = 0; i < link->subscription_count; i++)
        free(link->subscriptions[i]);
    free(link->subscriptions);
    free(link->host);
    free(link->cafile);
    free(link->certfile);
    free(link->keyfile);
    free(link->client_id);
    if (link->wake_fd >= 0)
        close(link->wake_fd);
    if (link->ack_init) {
        pthread_condattr_destroy(&link->ack_condattr);
        pthread_mutex_destroy(&link->ack_lock);
    }
    free(link);
    mosquitto_lib_cleanup();
}

bool broker_link_is_connected(const broker_link *link)
{
    return atomic_load(&link->connected);
}

uint64_t broker_link_connect_count(const broker_link *link)
{
    return atomic_load(&link->connect_count);
}

int broker_link_protocol_version(const broker_link *link)
{
    return atomic_load(&link->version);
}
