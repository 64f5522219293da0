/* grpcload: TransferFunds calls over HTTP/2 (nghttp2), each with its own request_id.
 *
 * h2load sends one request body over and over, and a TransferFunds with the
 * same request_id is a replay that moves no money, so h2load cannot drive
 * transfers. The bench's Python client can, but on a 2-core machine it takes
 * a third of a core or more from the server it measures, where pgbench's own
 * client is C. This is the C counterpart for TransferFunds: one thread,
 * CONNS connections with STREAMS calls in flight on each, a new call as soon
 * as one ends, random pairs of distinct ids from IDS.
 *
 *   grpcload HOST PORT CONNS STREAMS SECONDS WARMUP TAG IDS
 *
 * IDS is a comma-separated list of funded user ids. Prints one JSON object:
 * calls counted in the window (after WARMUP seconds, for SECONDS), their
 * gRPC status codes, calls/s and latency percentiles in ms.
 *
 * Built by bench/grpcload.py (cc ... -lnghttp2).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64
#define MAX_CODES 17 /* gRPC status codes 0..16 */

typedef struct {
    double began;
    int status; /* grpc-status, -1 until the trailers say */
    size_t sent;
    size_t length;
    uint8_t body[128];
} Call;

typedef struct {
    int fd;
    nghttp2_session *session;
    int in_flight;
} Conn;

static const char *g_authority;
static const char *g_tag;
static long *g_ids;
static int g_id_count;
static int g_streams;
static double g_measure_from, g_measure_to;
static unsigned long long g_counter, g_rng = 0x9E3779B97F4A7C15ULL;
static long g_codes[MAX_CODES + 1]; /* last slot: no grpc-status at all */
static double *g_latencies;
static size_t g_latency_count, g_latency_cap;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static unsigned long long next_random(void) { /* xorshift64 */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static size_t put_varint(uint8_t *out, unsigned long long value) {
    size_t n = 0;
    while (value >= 0x80) {
        out[n++] = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    out[n++] = (uint8_t)value;
    return n;
}

/* A gRPC frame (flag, 4-byte length) of a TransferFundsRequest:
 * from_user_id = 1, to_user_id = 2, amount = 3, request_id = 4. */
static void build_request(Call *call) {
    uint8_t message[96];
    char request_id[64];
    size_t n = 0;
    int from = (int)(next_random() % (unsigned)g_id_count);
    int to = (int)(next_random() % (unsigned)(g_id_count - 1));
    if (to >= from) to++;
    /* At most 1 + 16 + 1 + 16 characters: fits request_id and message. */
    int id_length = snprintf(request_id, sizeof request_id, "g%.16s-%llx", g_tag, g_counter++);
    message[n++] = 0x08;
    n += put_varint(message + n, (unsigned long long)g_ids[from]);
    message[n++] = 0x10;
    n += put_varint(message + n, (unsigned long long)g_ids[to]);
    message[n++] = 0x18;
    n += put_varint(message + n, 1 + next_random() % 100);
    message[n++] = 0x22;
    n += put_varint(message + n, (unsigned long long)id_length);
    memcpy(message + n, request_id, (size_t)id_length);
    n += (size_t)id_length;
    call->body[0] = 0;
    call->body[1] = (uint8_t)(n >> 24);
    call->body[2] = (uint8_t)(n >> 16);
    call->body[3] = (uint8_t)(n >> 8);
    call->body[4] = (uint8_t)n;
    memcpy(call->body + 5, message, n);
    call->length = n + 5;
    call->sent = 0;
}

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data) {
    (void)session, (void)stream_id, (void)user_data;
    Call *call = source->ptr;
    size_t left = call->length - call->sent;
    if (left > length) left = length;
    memcpy(buf, call->body + call->sent, left);
    call->sent += left;
    if (call->sent == call->length) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)left;
}

#define HEADER(name, value) \
    { (uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, strlen(value), NGHTTP2_NV_FLAG_NONE }

static int submit_call(Conn *conn) {
    Call *call = malloc(sizeof *call);
    if (call == NULL) return -1;
    build_request(call);
    call->status = -1;
    call->began = now();
    nghttp2_nv headers[] = {
        HEADER(":method", "POST"),
        HEADER(":scheme", "http"),
        HEADER(":path", "/users.v1.UserService/TransferFunds"),
        HEADER(":authority", g_authority),
        HEADER("content-type", "application/grpc"),
        HEADER("te", "trailers"),
    };
    nghttp2_data_provider body = {.source.ptr = call, .read_callback = read_body};
    int32_t stream = nghttp2_submit_request(conn->session, NULL, headers,
                                            sizeof headers / sizeof headers[0], &body, call);
    if (stream < 0) {
        free(call);
        return -1;
    }
    conn->in_flight++;
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
    (void)flags, (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || namelen != 11 || memcmp(name, "grpc-status", 11))
        return 0;
    Call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (call != NULL && valuelen > 0 && valuelen < 4) {
        char text[4] = {0};
        memcpy(text, value, valuelen);
        call->status = atoi(text);
    }
    return 0;
}

static int on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                    void *user_data) {
    (void)error_code;
    Conn *conn = user_data;
    Call *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (call == NULL) return 0;
    double ended = now();
    if (ended >= g_measure_from && ended <= g_measure_to) {
        int code = call->status >= 0 && call->status < MAX_CODES ? call->status : MAX_CODES;
        g_codes[code]++;
        if (g_latency_count == g_latency_cap) {
            g_latency_cap = g_latency_cap ? 2 * g_latency_cap : 65536;
            g_latencies = realloc(g_latencies, g_latency_cap * sizeof *g_latencies);
            if (g_latencies == NULL) abort();
        }
        g_latencies[g_latency_count++] = ended - call->began;
    }
    free(call);
    conn->in_flight--;
    if (ended < g_measure_to) submit_call(conn);
    return 0;
}

static int flush(Conn *conn) {
    for (;;) {
        const uint8_t *data;
        ssize_t length = nghttp2_session_mem_send(conn->session, &data);
        if (length < 0) return -1;
        if (length == 0) return 0;
        while (length > 0) {
            ssize_t written = write(conn->fd, data, (size_t)length);
            if (written < 0) {
                if (errno == EINTR) continue;
                return -1;
            }
            data += written;
            length -= written;
        }
    }
}

static int dial(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found;
    if (getaddrinfo(host, port, &hints, &found) != 0) return -1;
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile_ms(double q) {
    if (g_latency_count == 0) return -1;
    size_t index = (size_t)(q / 100.0 * (double)(g_latency_count - 1) + 0.5);
    return g_latencies[index] * 1000.0;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: grpcload HOST PORT CONNS STREAMS SECONDS WARMUP TAG IDS\n");
        return 2;
    }
    const char *host = argv[1], *port = argv[2];
    int conns = atoi(argv[3]);
    g_streams = atoi(argv[4]);
    double seconds = atof(argv[5]), warmup = atof(argv[6]);
    g_tag = argv[7];
    for (const char *p = argv[8]; *p; p++) g_id_count += *p == ',';
    g_ids = calloc((size_t)g_id_count + 1, sizeof *g_ids);
    char *ids = strdup(argv[8]);
    g_id_count = 0;
    for (char *id = strtok(ids, ","); id != NULL; id = strtok(NULL, ",")) g_ids[g_id_count++] = atol(id);
    if (conns < 1 || conns > MAX_CONNS || g_streams < 1 || seconds <= 0 || g_id_count < 2) {
        fprintf(stderr, "grpcload: bad arguments\n");
        return 2;
    }
    char authority[300];
    snprintf(authority, sizeof authority, "%s:%s", host, port);
    g_authority = authority;
    for (const char *p = g_tag; *p; p++) g_rng = g_rng * 31 + (unsigned char)*p;

    nghttp2_session_callbacks *callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_close);
    Conn pool[MAX_CONNS];
    struct pollfd polled[MAX_CONNS];
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000}};
    for (int i = 0; i < conns; i++) {
        pool[i].fd = dial(host, port);
        if (pool[i].fd < 0) {
            fprintf(stderr, "grpcload: cannot connect to %s\n", authority);
            return 1;
        }
        pool[i].in_flight = 0;
        nghttp2_session_client_new(&pool[i].session, callbacks, &pool[i]);
        nghttp2_submit_settings(pool[i].session, NGHTTP2_FLAG_NONE, settings, 1);
        polled[i] = (struct pollfd){.fd = pool[i].fd, .events = POLLIN};
    }
    double started = now();
    g_measure_from = started + warmup;
    g_measure_to = g_measure_from + seconds;
    for (int i = 0; i < conns; i++) {
        for (int s = 0; s < g_streams; s++) submit_call(&pool[i]);
        if (flush(&pool[i]) != 0) return 1;
    }
    uint8_t buffer[65536];
    double give_up = g_measure_to + 5.0;
    for (;;) {
        int open = 0;
        for (int i = 0; i < conns; i++) open += pool[i].in_flight;
        if (open == 0 || now() > give_up) break;
        if (poll(polled, (nfds_t)conns, 100) < 0 && errno != EINTR) return 1;
        for (int i = 0; i < conns; i++) {
            if (!(polled[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t got = read(pool[i].fd, buffer, sizeof buffer);
            if (got <= 0) {
                fprintf(stderr, "grpcload: connection %d closed\n", i);
                return 1;
            }
            if (nghttp2_session_mem_recv(pool[i].session, buffer, (size_t)got) < 0) return 1;
            if (flush(&pool[i]) != 0) return 1;
        }
    }
    qsort(g_latencies, g_latency_count, sizeof *g_latencies, compare);
    printf("{\"calls\": %zu, \"calls_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"codes\": {",
           g_latency_count, (double)g_latency_count / seconds, percentile_ms(50), percentile_ms(99));
    int first = 1;
    for (int code = 0; code <= MAX_CODES; code++) {
        if (g_codes[code] == 0) continue;
        printf("%s\"%d\": %ld", first ? "" : ", ", code == MAX_CODES ? -1 : code, g_codes[code]);
        first = 0;
    }
    printf("}}\n");
    return 0;
}
