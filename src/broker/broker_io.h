/*
 * broker_io.h - two ways of driving a libmosquitto connection that ferryd's
 * broker link (broker_link.c) and the grants benchmark's load generator
 * (bench/grants/grants_bench.c) share, so that the bench's echo is driven
 * exactly as ferryd is and the comparison stays fair.
 */
#ifndef FERRY_BROKER_IO_H
#define FERRY_BROKER_IO_H

#include <stdbool.h>

#include <mosquitto.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

/* Whether TLS can hand out input without waiting for the socket:
 * decrypted bytes, or a whole record read ahead. A socket's epoll entry
 * cannot see those, so they are read before the connection is left. A
 * record read ahead only in part needs the socket (SSL_peek then reads it
 * once, finds nothing more and says so). Errors count as input, for
 * libmosquitto to see. */
static inline bool broker_tls_readable(SSL *ssl)
{
    if (ssl == NULL || !SSL_has_pending(ssl))
        return false;
    if (SSL_pending(ssl) > 0)
        return true;
    unsigned char byte;
    int n = SSL_peek(ssl, &byte, 1);
    return n > 0 || SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ;
}

/* Writes every packet libmosquitto has queued with the socket corked.
 * libmosquitto writes each packet with its own SSL_write, so a request's
 * PUBACK and its answer would leave as two TCP segments, two wake-ups and
 * two reads at the broker; corked, they leave as one. */
static inline int broker_write_corked(struct mosquitto *mosq)
{
    int fd = mosquitto_socket(mosq), on = 1, off = 0;
    if (fd < 0)
        return MOSQ_ERR_NO_CONN;
    if (!mosquitto_want_write(mosq))
        return MOSQ_ERR_SUCCESS;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    int rc = mosquitto_loop_write(mosq, 1);
    /* Uncorking sends what is held now (a lost socket: nothing to do). */
    fd = mosquitto_socket(mosq);
    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
    return rc;
}

#endif
