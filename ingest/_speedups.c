/*
 * ingest._speedups: the per-byte loops of a CSV range, in C, without the GIL.
 *
 * scan_lines: every LF of a buffer, those outside quotes, and every quote, in one pass (SSE2
 * compares 16 bytes at a time on x86-64). It gives what ingest.s3csv.ranges.scan_newlines
 * computes with numpy, which stays as the fallback.
 *
 * sha256_spans: the SHA-256 of many spans of one buffer. The import hashes every record of
 * a range (hundreds of thousands per call) and every dedup key longer than 14 bytes. The
 * digests come back to back as raw bytes, as lower-case hex, or both. On x86-64 CPUs with
 * the SHA extensions (SHA-NI) blocks are compressed with them, two messages side by side;
 * elsewhere with the portable code below, which gives the same digests (tests compare both
 * with hashlib). Hex is written with SSSE3 shuffles where the CPU has them.
 *
 * class_run: whether each value of a string column is one class of bytes repeated, within
 * length bounds: the str_matches checks of the form ^[class]{lo,hi}$ (ingest.schemas.regex).
 *
 * short_keys: the dedup identities of key texts of at most 14 bytes (ingest.dedup).
 *
 * Optional at build and at run time: without it, ingest.hashing falls back to polars-hash,
 * then hashlib, scan_newlines and short_keys to numpy, and class runs to a regex engine.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define INGEST_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* -- scan_lines ------------------------------------------------------------------------- */

typedef struct {
    int64_t *items;
    size_t size, capacity;
} positions;

static int
positions_push(positions *v, int64_t value)
{
    if (v->size == v->capacity) {
        size_t capacity = v->capacity ? 2 * v->capacity : 4096;
        int64_t *items = realloc(v->items, capacity * sizeof *items);
        if (!items) {
            return -1;
        }
        v->items = items;
        v->capacity = capacity;
    }
    v->items[v->size++] = value;
    return 0;
}

/* One LF or quote at ``at``: a quote flips the parity; an LF is a record end at even parity. */
static inline int
scan_hit(uint8_t byte, uint8_t quote, int64_t at, int *parity, int keep_quotes,
         positions *newlines, positions *ends, positions *quotes)
{
    if (byte == quote) {
        *parity ^= 1;
        return keep_quotes ? positions_push(quotes, at) : 0;
    }
    if (positions_push(newlines, at) < 0) {
        return -1;
    }
    return *parity ? 0 : positions_push(ends, at);
}

static int
scan_buffer(const uint8_t *p, size_t n, uint8_t quote, int *parity, int keep_quotes,
            positions *newlines, positions *ends, positions *quotes)
{
    size_t i = 0;
#if defined(INGEST_SHA_NI) && defined(__SSE2__)
    const __m128i lf = _mm_set1_epi8('\n'), qq = _mm_set1_epi8((char)quote);
    for (; i + 16 <= n; i += 16) {
        const __m128i block = _mm_loadu_si128((const __m128i *)(p + i));
        unsigned int mask = (unsigned int)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(block, lf), _mm_cmpeq_epi8(block, qq)));
        while (mask) {
            const unsigned int k = (unsigned int)__builtin_ctz(mask);
            mask &= mask - 1;
            if (scan_hit(p[i + k], quote, (int64_t)(i + k), parity, keep_quotes, newlines, ends,
                         quotes) < 0) {
                return -1;
            }
        }
    }
#endif
    for (; i < n; i++) {
        if ((p[i] == '\n' || p[i] == quote)
            && scan_hit(p[i], quote, (int64_t)i, parity, keep_quotes, newlines, ends, quotes) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
positions_take(positions *v)
{
    PyObject *out = PyByteArray_FromStringAndSize((const char *)v->items,
                                                  (Py_ssize_t)(v->size * sizeof(int64_t)));
    free(v->items);
    v->items = NULL;
    return out;
}

PyDoc_STRVAR(
    scan_lines_doc,
    "scan_lines(data, quote, parity, keep_quotes, /)\n--\n\n"
    "Every LF of data, those outside quotes (starting at quote parity 0 or 1), and every quote\n"
    "when keep_quotes: (newlines, record_ends, quotes or None, parity at the end), the\n"
    "positions as native int64 in bytearrays. quote must not be LF.");

static PyObject *
scan_lines(PyObject *module, PyObject *args)
{
    Py_buffer data;
    int quote, parity, keep_quotes, failed;
    positions newlines = {0}, ends = {0}, quotes = {0};
    PyObject *result = NULL, *a = NULL, *b = NULL, *c = NULL;
    if (!PyArg_ParseTuple(args, "y*iip:scan_lines", &data, &quote, &parity, &keep_quotes)) {
        return NULL;
    }
    if (quote < 0 || quote > 255 || quote == '\n' || (parity != 0 && parity != 1)) {
        PyErr_SetString(PyExc_ValueError, "quote must be a byte other than LF, parity 0 or 1");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    failed = scan_buffer((const uint8_t *)data.buf, (size_t)data.len, (uint8_t)quote, &parity,
                         keep_quotes, &newlines, &ends, &quotes);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    a = positions_take(&newlines);
    b = positions_take(&ends);
    c = keep_quotes ? positions_take(&quotes) : Py_NewRef(Py_None);
    if (a && b && c) {
        result = Py_BuildValue("OOOi", a, b, c, parity);
    }
done:
    free(newlines.items);
    free(ends.items);
    free(quotes.items);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    PyBuffer_Release(&data);
    return result;
}

/* -- class_run -------------------------------------------------------------------------- */

/* n + 1 native int64 offsets of n values in data_len bytes: each value inside the data and
 * ending where or after it starts. Otherwise a ValueError, and -1. */
static int
checked_offsets(const Py_buffer *offsets, Py_ssize_t data_len, Py_ssize_t *count)
{
    if (offsets->len % (Py_ssize_t)sizeof(int64_t) || offsets->len < (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "need n + 1 int64 offsets");
        return -1;
    }
    *count = offsets->len / (Py_ssize_t)sizeof(int64_t) - 1;
    const int64_t *at = (const int64_t *)offsets->buf;
    for (Py_ssize_t i = 0; i < *count; i++) {
        if (at[i] < 0 || at[i] > at[i + 1] || at[i + 1] > (int64_t)data_len) {
            PyErr_Format(PyExc_ValueError, "value %zd is outside the %zd-byte data", i, data_len);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(
    class_run_doc,
    "class_run(data, offsets, table, lo, hi, /)\n--\n\n"
    "For each value data[offsets[i]:offsets[i+1]] (offsets: native int64, n + 1 of them): 1 if\n"
    "it is lo to hi bytes long (hi < 0: no upper bound) and table[b] is non-zero for each of\n"
    "its bytes b, else 0. table holds 256 bytes. Returns n bytes as a bytearray.");

static PyObject *
class_run(PyObject *module, PyObject *args)
{
    Py_buffer data, offsets, table;
    Py_ssize_t lo, hi;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*nn:class_run", &data, &offsets, &table, &lo, &hi)) {
        return NULL;
    }
    Py_ssize_t count;
    if (table.len != 256) {
        PyErr_SetString(PyExc_ValueError, "need a 256-byte table");
        goto done;
    }
    if (checked_offsets(&offsets, data.len, &count) < 0) {
        goto done;
    }
    const int64_t *at = (const int64_t *)offsets.buf;
    if (!(result = PyByteArray_FromStringAndSize(NULL, count))) {
        goto done;
    }
    uint8_t *out = (uint8_t *)PyByteArray_AS_STRING(result);
    const uint8_t *bytes = (const uint8_t *)data.buf, *allowed = (const uint8_t *)table.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        const int64_t length = at[i + 1] - at[i];
        uint8_t ok = length >= lo && (hi < 0 || length <= hi);
        for (int64_t j = at[i]; ok && j < at[i + 1]; j++) {
            ok = allowed[bytes[j]] != 0;
        }
        out[i] = ok;
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&table);
    return result;
}

/* -- short_keys ------------------------------------------------------------------------- */

PyDoc_STRVAR(
    short_keys_doc,
    "short_keys(data, offsets, /)\n--\n\n"
    "For the values data[offsets[i]:offsets[i+1]] (offsets: native int64, n + 1 of them):\n"
    "(short, ids). short: a bytearray of n bytes, 1 where the value is at most 14 bytes long.\n"
    "ids: 16 bytes for each short value, in order: a mix byte, the length, the value, zeros\n"
    "(what ingest.dedup.short_key_identities makes with numpy).");

static PyObject *
short_keys(PyObject *module, PyObject *args)
{
    Py_buffer data, offsets;
    PyObject *mask = NULL, *ids = NULL, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*:short_keys", &data, &offsets)) {
        return NULL;
    }
    Py_ssize_t count, shorts = 0;
    if (checked_offsets(&offsets, data.len, &count) < 0) {
        goto done;
    }
    const int64_t *at = (const int64_t *)offsets.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        shorts += at[i + 1] - at[i] <= 14;
    }
    if (!(mask = PyByteArray_FromStringAndSize(NULL, count))
        || !(ids = PyBytes_FromStringAndSize(NULL, shorts * 16))) {
        goto done;
    }
    uint8_t *flags = (uint8_t *)PyByteArray_AS_STRING(mask);
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(ids);
    const uint8_t *bytes = (const uint8_t *)data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        const int64_t length = at[i + 1] - at[i];
        flags[i] = length <= 14;
        if (!flags[i]) {
            continue;
        }
        uint8_t id[16] = {0};
        uint64_t low, high;
        id[1] = (uint8_t)length;
        memcpy(id + 2, bytes + at[i], (size_t)length);
        memcpy(&low, id, 8);
        memcpy(&high, id + 8, 8);
        id[0] = (uint8_t)(((low * 0x9E3779B97F4A7C15ULL) ^ (high * 0xC2B2AE3D27D4EB4FULL)) >> 56);
        memcpy(out, id, 16);
        out += 16;
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, mask, ids);
done:
    Py_XDECREF(mask);
    Py_XDECREF(ids);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    return result;
}

/* -- sha256_spans ----------------------------------------------------------------------- */

typedef void (*compress_fn)(uint32_t state[8], const uint8_t *blocks, size_t count);

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

static const uint32_t H0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void
compress_portable(uint32_t st[8], const uint8_t *p, size_t count)
{
    uint32_t w[64];
    for (; count; count--, p += 64) {
        for (int i = 0; i < 16; i++) {
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16
                   | (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
        }
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
        uint32_t e = st[4], f = st[5], g = st[6], h = st[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g))
                          + K[i] + w[i];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        st[0] += a;
        st[1] += b;
        st[2] += c;
        st[3] += d;
        st[4] += e;
        st[5] += f;
        st[6] += g;
        st[7] += h;
    }
}

#ifdef INGEST_SHA_NI
#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

/* The state is kept as the two registers the SHA instructions work on, ABEF and CDGH. */
SHANI static inline void
shani_load(const uint32_t st[8], __m128i *abef, __m128i *cdgh)
{
    const __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[0]), 0xB1);
    const __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[4]), 0x1B);
    *abef = _mm_alignr_epi8(dcba, efgh, 8);
    *cdgh = _mm_blend_epi16(efgh, dcba, 0xF0);
}

SHANI static inline void
shani_store(uint32_t st[8], __m128i abef, __m128i cdgh)
{
    const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&st[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&st[4], _mm_alignr_epi8(dchg, feba, 8));
}

/* Four rounds of one block (pass q of 16), then, for the first twelve passes, four more
 * words of the message schedule: W[t..t+3] from W[t-16..t-1], in place of W[t-16..t-13]. */
#define SHANI_PASS(abef, cdgh, m, q)                                                        \
    do {                                                                                    \
        const __m128i wk_ =                                                                 \
            _mm_add_epi32((m)[(q) & 3], _mm_loadu_si128((const __m128i *)&K[4 * (q)]));    \
        (cdgh) = _mm_sha256rnds2_epu32((cdgh), (abef), wk_);                                \
        (abef) = _mm_sha256rnds2_epu32((abef), (cdgh), _mm_shuffle_epi32(wk_, 0x0E));       \
        if ((q) < 12) {                                                                     \
            const __m128i next_ = _mm_add_epi32(                                            \
                _mm_sha256msg1_epu32((m)[(q) & 3], (m)[((q) + 1) & 3]),                     \
                _mm_alignr_epi8((m)[((q) + 3) & 3], (m)[((q) + 2) & 3], 4));                \
            (m)[(q) & 3] = _mm_sha256msg2_epu32(next_, (m)[((q) + 3) & 3]);                 \
        }                                                                                   \
    } while (0)

SHANI static inline void
shani_message(__m128i m[4], const uint8_t *p)
{
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    for (int i = 0; i < 4; i++) {
        m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), swap);
    }
}

SHANI static void
compress_shani(uint32_t st[8], const uint8_t *p, size_t count)
{
    __m128i abef, cdgh;
    shani_load(st, &abef, &cdgh);
    for (; count; count--, p += 64) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i m[4];
        shani_message(m, p);
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) {
            SHANI_PASS(abef, cdgh, m, q);
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    shani_store(st, abef, cdgh);
}

/* Two messages' blocks side by side: each SHA instruction waits for the one before it in its
 * own message, so the other message's instructions fill the wait. */
SHANI static void
compress_shani_x2(uint32_t st1[8], const uint8_t *p1, uint32_t st2[8], const uint8_t *p2,
                  size_t count)
{
    __m128i abef1, cdgh1, abef2, cdgh2;
    shani_load(st1, &abef1, &cdgh1);
    shani_load(st2, &abef2, &cdgh2);
    for (; count; count--, p1 += 64, p2 += 64) {
        const __m128i abef10 = abef1, cdgh10 = cdgh1, abef20 = abef2, cdgh20 = cdgh2;
        __m128i m1[4], m2[4];
        shani_message(m1, p1);
        shani_message(m2, p2);
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) {
            SHANI_PASS(abef1, cdgh1, m1, q);
            SHANI_PASS(abef2, cdgh2, m2, q);
        }
        abef1 = _mm_add_epi32(abef1, abef10);
        cdgh1 = _mm_add_epi32(cdgh1, cdgh10);
        abef2 = _mm_add_epi32(abef2, abef20);
        cdgh2 = _mm_add_epi32(cdgh2, cdgh20);
    }
    shani_store(st1, abef1, cdgh1);
    shani_store(st2, abef2, cdgh2);
}

/* 32 digest bytes as 64 lower-case hex digits: each nibble picks its digit with one shuffle. */
__attribute__((target("ssse3"))) static void
hex_ssse3(const uint8_t in[32], char out[64])
{
    const __m128i digits = _mm_setr_epi8('0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a',
                                         'b', 'c', 'd', 'e', 'f');
    const __m128i low = _mm_set1_epi8(0x0f);
    for (int i = 0; i < 2; i++) {
        const __m128i bytes = _mm_loadu_si128((const __m128i *)(in + 16 * i));
        const __m128i hi = _mm_shuffle_epi8(digits, _mm_and_si128(_mm_srli_epi16(bytes, 4), low));
        const __m128i lo = _mm_shuffle_epi8(digits, _mm_and_si128(bytes, low));
        _mm_storeu_si128((__m128i *)(out + 32 * i), _mm_unpacklo_epi8(hi, lo));
        _mm_storeu_si128((__m128i *)(out + 32 * i + 16), _mm_unpackhi_epi8(hi, lo));
    }
}

static int
cpu_has_ssse3(void)
{
    unsigned int a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9));
}

static int
cpu_has_sha_ni(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) {
        return 0;
    }
    if (!(c & (1u << 9)) || !(c & (1u << 19))) { /* SSSE3, SSE4.1 */
        return 0;
    }
    if (__get_cpuid_max(0, NULL) < 7) {
        return 0;
    }
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1; /* SHA */
}
#endif

typedef void (*compress2_fn)(uint32_t st1[8], const uint8_t *p1, uint32_t st2[8],
                            const uint8_t *p2, size_t count);

/* One message on its way: its whole blocks are read where they are, the last one or two
 * (the rest of the message, 0x80, zeros and the length in bits) from ``tail``. */
typedef struct {
    const uint8_t *msg;
    size_t full, blocks, done;
    uint32_t st[8];
    uint8_t tail[128];
} message;

static void
message_start(message *j, const uint8_t *msg, size_t len)
{
    size_t rest = len % 64;
    j->msg = msg;
    j->full = len / 64;
    j->done = 0;
    size_t tail = rest + 9 > 64 ? 2 : 1;
    j->blocks = j->full + tail;
    memcpy(j->st, H0, sizeof j->st);
    memcpy(j->tail, msg + j->full * 64, rest);
    j->tail[rest] = 0x80;
    memset(j->tail + rest + 1, 0, tail * 64 - rest - 1 - 8);
    uint64_t bits = (uint64_t)len << 3;
    for (int i = 0; i < 8; i++) {
        j->tail[tail * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    }
}

/* The next blocks of ``j`` that lie one after the other, and how many. */
static const uint8_t *
message_next(const message *j, size_t *count)
{
    if (j->done < j->full) {
        *count = j->full - j->done;
        return j->msg + 64 * j->done;
    }
    *count = j->blocks - j->done;
    return j->tail + 64 * (j->done - j->full);
}

static void
message_finish(compress_fn compress, message *j, uint8_t out[32])
{
    while (j->done < j->blocks) {
        size_t count;
        const uint8_t *p = message_next(j, &count);
        compress(j->st, p, count);
        j->done += count;
    }
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(j->st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(j->st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(j->st[i] >> 8);
        out[4 * i + 3] = (uint8_t)j->st[i];
    }
}

/* Two messages: their blocks side by side while both have some, then the rest alone. */
static void
message_pair(compress_fn compress, compress2_fn compress2, message *a, message *b,
             uint8_t out_a[32], uint8_t out_b[32])
{
    while (a->done < a->blocks && b->done < b->blocks) {
        size_t na, nb;
        const uint8_t *pa = message_next(a, &na), *pb = message_next(b, &nb);
        size_t count = na < nb ? na : nb;
        compress2(a->st, pa, b->st, pb, count);
        a->done += count;
        b->done += count;
    }
    message_finish(compress, a, out_a);
    message_finish(compress, b, out_b);
}

static const char HEX[] = "0123456789abcdef";

static void
hex_portable(const uint8_t in[32], char out[64])
{
    for (int j = 0; j < 32; j++) {
        out[2 * j] = HEX[in[j] >> 4];
        out[2 * j + 1] = HEX[in[j] & 15];
    }
}

typedef void (*hex_fn)(const uint8_t in[32], char out[64]);

static compress_fn best_compress = compress_portable;
static compress2_fn best_compress2 = NULL;
static hex_fn best_hex = hex_portable;
static const char *best_name = "portable";

PyDoc_STRVAR(
    sha256_spans_doc,
    "sha256_spans(data, starts, ends, raw, hex, portable=False, /)\n--\n\n"
    "SHA-256 of data[starts[i]:ends[i]] for every i (starts and ends: native int64, C-contiguous).\n"
    "Returns (raw, hex): the digests back to back as 32 bytes each, and as 64 lower-case hex\n"
    "digits each, as bytes; either is None unless asked for. portable=True skips SHA-NI.");

static PyObject *
sha256_spans(PyObject *module, PyObject *args)
{
    Py_buffer data, starts, ends;
    int want_raw, want_hex, portable = 0;
    PyObject *raw = NULL, *hex = NULL, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*pp|p:sha256_spans", &data, &starts, &ends, &want_raw,
                          &want_hex, &portable)) {
        return NULL;
    }
    if (starts.len != ends.len || starts.len % (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "starts and ends must be int64 buffers of one length");
        goto done;
    }
    Py_ssize_t count = starts.len / (Py_ssize_t)sizeof(int64_t);
    if (count > PY_SSIZE_T_MAX / 64) {
        PyErr_SetString(PyExc_OverflowError, "too many spans");
        goto done;
    }
    const int64_t *s = (const int64_t *)starts.buf, *e = (const int64_t *)ends.buf;
    const int64_t size = (int64_t)data.len;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (s[i] < 0 || s[i] > e[i] || e[i] > size) {
            PyErr_Format(PyExc_ValueError, "span %zd (%lld, %lld) is outside the %lld-byte data",
                         i, (long long)s[i], (long long)e[i], (long long)size);
            goto done;
        }
    }
    if (want_raw && !(raw = PyBytes_FromStringAndSize(NULL, count * 32))) {
        goto done;
    }
    if (want_hex && !(hex = PyBytes_FromStringAndSize(NULL, count * 64))) {
        goto done;
    }
    uint8_t *raw_out = raw ? (uint8_t *)PyBytes_AS_STRING(raw) : NULL;
    char *hex_out = hex ? PyBytes_AS_STRING(hex) : NULL;
    const uint8_t *base = (const uint8_t *)data.buf;
    compress_fn compress = portable ? compress_portable : best_compress;
    compress2_fn compress2 = portable ? NULL : best_compress2;
    hex_fn to_hex = portable ? hex_portable : best_hex;
    Py_BEGIN_ALLOW_THREADS
    uint8_t digests[2][32];
    message jobs[2];
    Py_ssize_t step = compress2 ? 2 : 1;
    for (Py_ssize_t i = 0; i < count; i += step) {
        Py_ssize_t n = count - i < step ? count - i : step;
        for (Py_ssize_t k = 0; k < n; k++) {
            message_start(&jobs[k], base + s[i + k], (size_t)(e[i + k] - s[i + k]));
        }
        uint8_t *out[2];
        for (Py_ssize_t k = 0; k < n; k++) {
            out[k] = raw_out ? raw_out + 32 * (i + k) : digests[k];
        }
        if (n == 2) {
            message_pair(compress, compress2, &jobs[0], &jobs[1], out[0], out[1]);
        } else {
            message_finish(compress, &jobs[0], out[0]);
        }
        if (hex_out) {
            for (Py_ssize_t k = 0; k < n; k++) {
                to_hex(out[k], hex_out + 64 * (i + k));
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, raw ? raw : Py_None, hex ? hex : Py_None);
done:
    Py_XDECREF(raw);
    Py_XDECREF(hex);
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&ends);
    return result;
}

static PyMethodDef methods[] = {
    {"sha256_spans", sha256_spans, METH_VARARGS, sha256_spans_doc},
    {"scan_lines", scan_lines, METH_VARARGS, scan_lines_doc},
    {"class_run", class_run, METH_VARARGS, class_run_doc},
    {"short_keys", short_keys, METH_VARARGS, short_keys_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "ingest._speedups",
    .m_doc = "The per-byte loops of a CSV range: line scan, class runs, short keys, SHA-256.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#ifdef INGEST_SHA_NI
    if (cpu_has_ssse3()) {
        best_hex = hex_ssse3;
    }
    if (cpu_has_sha_ni()) {
        best_compress = compress_shani;
        best_compress2 = compress_shani_x2;
        best_name = "sha-ni";
    }
#endif
    PyObject *module = PyModule_Create(&module_def);
    if (module && PyModule_AddStringConstant(module, "BACKEND", best_name) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
