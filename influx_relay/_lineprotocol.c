/* The line scanner of influx_relay.lineprotocol, in C.
 *
 * scan(body, ts) and prepare(body, ts) give exactly what the pure-Python
 * functions of lineprotocol.py give, for every body (and times(body), the
 * gap ledger's time range of a forwarded body, what python_times gives): the same lines, the same
 * ``changed``, the same LineProtocolError (line number, line, reason). The
 * Python module is the reference; this file follows its structure, quirks
 * included, and names the Python function each part stands for:
 *
 *   - a body holding a '"' or an escaped newline is split where InfluxDB's
 *     scanner ends lines (split_lines) and each line is checked by the _LINE
 *     pattern (_scan_general);
 *   - any other body is split on "\n" and each line is split on spaces
 *     (_simple_line), or checked by _LINE when it holds a backslash
 *     (_match_line). (_scan_plain, the Python fast path, gives what this
 *     gives whenever it applies: tests/unit/test_lineprotocol.py checks it.)
 *
 * _LINE is a backtracking regular expression; match_line() below finds the
 * match Python's re finds (the first in its order of trying), which is what
 * decides whether a line is accepted and whether it has a timestamp. See the
 * comment above match_line() for why no other backtracking can happen.
 *
 * Every read is bounded by the length of the buffer: a body is never assumed
 * to end with a newline or a NUL.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static PyObject *LineProtocolError;

/* ------------------------------------------------------------------------ */
/* Character classes                                                         */

/* bytes.strip()'s whitespace: ASCII space, \t, \n, \r, \v, \f */
#define IS_WS(c) ((c) == ' ' || ((c) >= '\t' && (c) <= '\r'))

/* Flags of each byte value: which searches stop at it. */
enum {
    STOP_KEY = 1,     /* split_lines, before the first space: \ SP \n */
    STOP_FIELDS = 2,  /* split_lines, outside a string: \ " \n */
    STOP_STRING = 4,  /* split_lines and _LINE, in a string: \ " */
    STOP_FKEY = 8,    /* _LINE, the key (measurement and tags): \ SP \n */
    STOP_FIELD = 16,  /* _LINE, a field key: \ SP \n = , */
    STOP_VALUE = 32,  /* _LINE, an unquoted value: \ SP \n , " \r */
    STOP_EQ = 64,     /* _simple_line, a field set's "=" */
    STOP_LINES = 128, /* _scan_lines: \ SP \n */
};

static unsigned char stops[256];

static void
init_stops(void)
{
    const char *s;
    for (s = "\\ \n"; *s; s++) stops[(unsigned char)*s] |= STOP_KEY | STOP_FKEY;
    for (s = "\\\"\n"; *s; s++) stops[(unsigned char)*s] |= STOP_FIELDS;
    for (s = "\\\""; *s; s++) stops[(unsigned char)*s] |= STOP_STRING;
    for (s = "\\ \n=,"; *s; s++) stops[(unsigned char)*s] |= STOP_FIELD;
    for (s = "\\ \n,\"\r"; *s; s++) stops[(unsigned char)*s] |= STOP_VALUE;
    stops['='] |= STOP_EQ;
    for (s = "\\ \n"; *s; s++) stops[(unsigned char)*s] |= STOP_LINES;
}

/* The first i in [i, n) where b[i] is one of the ``k`` bytes c0..c5 (whose
 * flag in ``stops`` is ``f``), or n: 16 bytes at a time where SSE2 is there. */
static inline __attribute__((always_inline)) Py_ssize_t
skip_set(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, unsigned char f, int k,
         char c0, char c1, char c2, char c3, char c4, char c5)
{
#if defined(__SSE2__)
    while (i + 16 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i m = _mm_cmpeq_epi8(v, _mm_set1_epi8(c0));
        int mask;
        if (k > 1) m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8(c1)));
        if (k > 2) m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8(c2)));
        if (k > 3) m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8(c3)));
        if (k > 4) m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8(c4)));
        if (k > 5) m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8(c5)));
        mask = _mm_movemask_epi8(m);
        if (mask) return i + __builtin_ctz((unsigned)mask);
        i += 16;
    }
#else
    while (i + 4 <= n) {
        if (stops[b[i]] & f) return i;
        if (stops[b[i + 1]] & f) return i + 1;
        if (stops[b[i + 2]] & f) return i + 2;
        if (stops[b[i + 3]] & f) return i + 3;
        i += 4;
    }
#endif
    while (i < n && !(stops[b[i]] & f)) i++;
    return i;
}

#define skip_to(b, i, n, f) skip_to_##f(b, i, n)
#define SKIP(f, k, c0, c1, c2, c3, c4, c5)                                          \
    static Py_ssize_t skip_to_##f(const unsigned char *b, Py_ssize_t i, Py_ssize_t n) \
    {                                                                               \
        return skip_set(b, i, n, f, k, c0, c1, c2, c3, c4, c5);                    \
    }
SKIP(STOP_KEY, 3, '\\', ' ', '\n', 0, 0, 0)
SKIP(STOP_FIELDS, 3, '\\', '"', '\n', 0, 0, 0)
SKIP(STOP_STRING, 2, '\\', '"', 0, 0, 0, 0)
SKIP(STOP_FKEY, 3, '\\', ' ', '\n', 0, 0, 0)
SKIP(STOP_FIELD, 5, '\\', ' ', '\n', '=', ',', 0)
SKIP(STOP_VALUE, 6, '\\', ' ', '\n', ',', '"', '\r')
SKIP(STOP_EQ, 1, '=', 0, 0, 0, 0, 0)

/* The bytes of a body that _scan_lines looks at (a space, a newline, a
 * backslash), one after the other: found 16 at a time, then taken one by one. */
typedef struct {
    const unsigned char *b;
    Py_ssize_t n;
    Py_ssize_t base; /* where the block in ``mask`` starts */
    unsigned mask;   /* its bytes not yet taken */
} Events;

static inline void
events_init(Events *ev, const unsigned char *b, Py_ssize_t n)
{
    ev->b = b;
    ev->n = n;
    ev->base = -16;
    ev->mask = 0;
}

/* Go on from ``pos`` (past what was taken). */
static inline void
events_seek(Events *ev, Py_ssize_t pos)
{
    ev->base = pos - 16;
    ev->mask = 0;
}

/* The next one's position, or n at the end. */
static inline Py_ssize_t
events_next(Events *ev)
{
    int k;
    while (ev->mask == 0) {
        const unsigned char *p;
        ev->base += 16;
        if (ev->base >= ev->n) {
            ev->base = ev->n;
            return ev->n;
        }
        p = ev->b + ev->base;
#if defined(__SSE2__)
        {
            unsigned char last[16];
            Py_ssize_t left = ev->n - ev->base;
            __m128i v, m;
            if (left < 16) { /* the last few bytes, in a zeroed block */
                memset(last, 0, sizeof(last));
                memcpy(last, p, left);
                p = last;
            }
            v = _mm_loadu_si128((const __m128i *)p);
            m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\n'))),
                             _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
            ev->mask = (unsigned)_mm_movemask_epi8(m);
        }
#else
        for (k = 0; k < 16 && ev->base + k < ev->n; k++) {
            if (stops[p[k]] & STOP_LINES) ev->mask |= 1u << k;
        }
#endif
    }
    k = __builtin_ctz(ev->mask);
    ev->mask &= ev->mask - 1;
    return ev->base + k;
}

/* Whether the eight bytes at p are all ASCII digits: their high nibbles are 3,
 * and still 3 once 6 is added to each (no carry crosses a byte that passes). */
static inline int
eight_digits(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return ((v & 0xF0F0F0F0F0F0F0F0ULL) |
            (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) ==
           0x3333333333333333ULL;
}

/* The end of the run of ASCII digits at b[i:n]. */
static inline Py_ssize_t
digits_end(const unsigned char *b, Py_ssize_t i, Py_ssize_t n)
{
    while (i + 8 <= n && eight_digits(b + i)) i += 8;
    while (i < n && b[i] >= '0' && b[i] <= '9') i++;
    return i;
}

/* Whether b[i:e] (not empty) is all ASCII digits: eight at a time, the last
 * eight overlapping the ones before. */
static inline int
all_digits(const unsigned char *b, Py_ssize_t i, Py_ssize_t e)
{
    if (e - i < 8) return digits_end(b, i, e) == e;
    for (; i + 8 < e; i += 8) {
        if (!eight_digits(b + i)) return 0;
    }
    return eight_digits(b + e - 8);
}

/* How many "=" less how many "," in b[i:e]. */
static inline Py_ssize_t
balance_of(const unsigned char *b, Py_ssize_t i, Py_ssize_t e)
{
    Py_ssize_t balance = 0;
#if defined(__SSE2__)
    for (; i + 16 <= e; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(b + i));
        balance += __builtin_popcount((unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(v, _mm_set1_epi8('='))));
        balance -= __builtin_popcount((unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(v, _mm_set1_epi8(','))));
    }
#endif
    for (; i < e; i++) balance += (b[i] == '=') - (b[i] == ',');
    return balance;
}

/* ------------------------------------------------------------------------ */
/* Where a line ends: split_lines (InfluxDB's scanLine)                      */

/* The end of the line that starts at ``i``: its newline, or n. */
static Py_ssize_t
line_end(const unsigned char *b, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t balance = 0; /* "=" minus "," since the first space, outside strings */
    unsigned char c;

    /* The key: a backslash escapes the byte after it (when two more follow). */
    for (;;) {
        i = skip_to(b, i, n, STOP_KEY);
        if (i >= n) return n;
        c = b[i];
        if (c == '\\') { i += (i + 2 < n) ? 2 : 1; continue; }
        if (c == '\n') return i;
        i++; /* the first space: the field section starts */
        break;
    }
    for (;;) {
        /* Outside a string: the "=" and "," since the last stop (``seen``) are
         * counted only at a stop that needs them, as split_lines does. */
        Py_ssize_t seen = i;
        i = skip_to(b, i, n, STOP_FIELDS);
        if (i >= n) return n;
        c = b[i];
        if (c == '\n') return i;
        balance += balance_of(b, seen, i);
        if (c == '\\') { i += (i + 2 < n) ? 2 : 1; continue; }
        /* '"' */
        i++;
        if (balance <= 0) continue;
        /* In a string, up to its closing quote: a newline does not end the line. */
        for (;;) {
            i = skip_to(b, i, n, STOP_STRING);
            if (i >= n) return n;
            if (b[i] == '\\') { i += (i + 2 < n) ? 2 : 1; continue; }
            i++; /* the closing '"' */
            break;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The _LINE pattern                                                         */
/*
 *   [ \t]*  KEY  " +"  FIELD ("," FIELD)*  (" +" -?[0-9]+)?  " *"  \r?  (?=\n|\Z)
 *
 *   KEY   = K1 K*         K1 = [^ \\\n,] | \\.     K = [^ \\\n] | \\.
 *   FIELD = (?:[^ \\\n=,]|\\.)+ = ( "(?:[^"\\]|\\.)*" | (?:[^ \\\n,"\r]|\\.|\r(?!\n|\Z))+ )
 *
 * Each repetition's alternatives start with different bytes, and what may
 * follow a repetition can never be its own next byte, so once the key's start
 * is chosen every part matches the longest run it can and the engine never
 * finds another way through (a shorter run leaves a byte that the next part
 * refuses). The one real choice is where the key starts: "[ \t]*" takes the
 * whole blank prefix first, then gives back one byte at a time, and a tab it
 * gives back may start the key (K1 matches a tab). So the candidates are the
 * end of the blank prefix, then each tab in it from the right; the first one
 * with a match wins, even when that match stops at a newline inside the line
 * (the caller then refuses the line, as m.end() != len(line) does).
 *
 * A candidate's outcome depends only on where its key ends, and the tabs of a
 * run share that end: a run is tried once, which keeps the search linear.
 */

/* K* from p: the end of the key (a space, a newline, the end, or a backslash
 * with nothing after it). */
static inline Py_ssize_t
key_run(const unsigned char *L, Py_ssize_t p, Py_ssize_t n)
{
    for (;;) {
        p = skip_to(L, p, n, STOP_FKEY);
        if (p < n && L[p] == '\\' && p + 1 < n) { p += 2; continue; }
        return p;
    }
}

/* The rest of the pattern from the space after the key at p. Returns 1 and
 * sets *mend (where the match ends) and *has_ts, or 0. */
static int
match_after_key(const unsigned char *L, Py_ssize_t p, Py_ssize_t n,
                Py_ssize_t *mend, int *has_ts)
{
    Py_ssize_t q, r, s, t, d, e;

    while (p < n && L[p] == ' ') p++;
    for (;;) {
        /* The field key, then "=". */
        q = p;
        for (;;) {
            q = skip_to(L, q, n, STOP_FIELD);
            if (q < n && L[q] == '\\' && q + 1 < n) { q += 2; continue; }
            break;
        }
        if (q == p || q >= n || L[q] != '=') return 0;
        q++;
        if (q < n && L[q] == '"') {
            /* A string, up to the first unescaped '"'. */
            r = q + 1;
            for (;;) {
                r = skip_to(L, r, n, STOP_STRING);
                if (r >= n) return 0;
                if (L[r] == '"') break;
                if (r + 1 >= n) return 0; /* a backslash with nothing after it */
                r += 2;
            }
            q = r + 1;
        } else {
            /* An unquoted value; a "\r" in it only when not before "\n" or the end. */
            r = q;
            for (;;) {
                r = skip_to(L, r, n, STOP_VALUE);
                if (r >= n) break;
                if (L[r] == '\\') {
                    if (r + 1 < n) { r += 2; continue; }
                    break;
                }
                if (L[r] == '\r' && r + 1 < n && L[r + 1] != '\n') { r++; continue; }
                break;
            }
            if (r == q) return 0;
            q = r;
        }
        if (q < n && L[q] == ',') { p = q + 1; continue; }
        break;
    }
    /* " +" and a timestamp, then " *", "\r?" and a newline or the end. */
    s = q;
    while (s < n && L[s] == ' ') s++;
    if (s > q) {
        t = s;
        if (t < n && L[t] == '-') t++;
        d = digits_end(L, t, n);
        if (d > t) {
            e = d;
            while (e < n && L[e] == ' ') e++;
            if (e < n && L[e] == '\r') e++;
            if (e == n || L[e] == '\n') { *mend = e; *has_ts = 1; return 1; }
        }
    }
    e = s;
    if (e < n && L[e] == '\r') e++;
    if (e == n || L[e] == '\n') { *mend = e; *has_ts = 0; return 1; }
    return 0;
}

/* _LINE.match(line): 1 with *mend and *has_ts set, or 0 (no match). */
static int
match_line(const unsigned char *L, Py_ssize_t n, Py_ssize_t *mend, int *has_ts)
{
    Py_ssize_t w = 0, j, ke, failed = -1;

    while (w < n && (L[w] == ' ' || L[w] == '\t')) w++;
    ke = key_run(L, w, n);
    /* The key right after the blank prefix: K1 is not ",", "\n" or a lone "\\". */
    if (w < n && L[w] != ',' && L[w] != '\n' && !(L[w] == '\\' && w + 1 >= n)) {
        if (ke < n && L[ke] == ' ' && match_after_key(L, ke, n, mend, has_ts)) return 1;
        failed = ke;
    }
    /* The key from a tab of the prefix, rightmost first. */
    for (j = w - 1; j >= 0; j--) {
        if (j + 1 < w && L[j + 1] == ' ') ke = j + 1;
        if (L[j] != '\t' || ke == failed) continue;
        if (ke < n && L[ke] == ' ' && match_after_key(L, ke, n, mend, has_ts)) return 1;
        failed = ke;
    }
    return 0;
}

/* _reason(line): why a line the pattern refused is bad. */
static const char *
reason(const unsigned char *b, Py_ssize_t s, Py_ssize_t e)
{
    Py_ssize_t i, quotes = 0;
    int space = 0;

    while (s < e && IS_WS(b[s])) s++;
    while (e > s && IS_WS(b[e - 1])) e--;
    if (s < e && b[s] == ',') return "missing measurement";
    for (i = s; i < e; i++) {
        if (b[i] == ' ' && (i == s || b[i - 1] != '\\')) { space = 1; break; }
    }
    if (!space) return "missing fields";
    for (i = s; i < e; i++) quotes += b[i] == '"';
    if (quotes % 2) return "unbalanced quotes";
    return "invalid field format";
}

/* ------------------------------------------------------------------------ */
/* What comes out: a list of lines (scan) or one body (prepare)              */

typedef struct {
    PyObject *body_obj;
    const unsigned char *body;
    Py_ssize_t n;
    const char *ts;
    Py_ssize_t tslen;
    int changed;
    Py_ssize_t points;
    /* scan(): the lines */
    PyObject *list;
    /* prepare(): while ``copying`` is 0, the body to forward is body[:last_end]
     * (every line so far as sent, and adjacent: a dropped line at the end does
     * not break that); then it is being written into ``scratch``. */
    int prepare;
    int copying;
    Py_ssize_t last_end;
    Py_ssize_t used;
} Out;

/* Where prepare() writes a new body before it becomes a bytes object: kept from
 * one call to the next, so that its pages are not faulted in again for every
 * body; freed when it grew past SCRATCH_KEEP. No other call can use it at the
 * same time: the GIL is held throughout, and nothing while it is in use can run
 * Python code (no object the garbage collector tracks is made until the new
 * body is copied out of it). */
static char *scratch;
static Py_ssize_t scratch_cap;
#define SCRATCH_KEEP (8 << 20)

static int
out_reserve(Out *o, Py_ssize_t more)
{
    Py_ssize_t need, cap;
    char *p;
    if (more <= scratch_cap - o->used) return 0;
    if (more > PY_SSIZE_T_MAX / 2 - o->used) { PyErr_NoMemory(); return -1; }
    need = o->used + more;
    cap = scratch_cap + scratch_cap / 2;
    if (cap < need) cap = need;
    if (cap < o->n + o->n / 4 + 64) cap = o->n + o->n / 4 + 64;
    p = PyMem_Realloc(scratch, cap);
    if (p == NULL) { PyErr_NoMemory(); return -1; }
    scratch = p;
    scratch_cap = cap;
    return 0;
}

static void
scratch_done(void)
{
    if (scratch_cap > SCRATCH_KEEP) {
        PyMem_Free(scratch);
        scratch = NULL;
        scratch_cap = 0;
    }
}

/* A line was dropped, or will be forwarded other than as sent. */
static inline int
out_changed(Out *o)
{
    o->changed = 1;
    return 0;
}

/* A line to forward: body[s:e], with " <ts>" after it when ``stamp``.
 * ``differs``: not as sent (stamped, or stripped of its "\r"). */
static inline __attribute__((always_inline)) int
out_line(Out *o, Py_ssize_t s, Py_ssize_t e, int stamp, int differs)
{
    Py_ssize_t len = e - s;
    char *w;

    if (differs || stamp) o->changed = 1;
    if (!o->prepare) {
        PyObject *line = PyBytes_FromStringAndSize(NULL, len + (stamp ? 1 + o->tslen : 0));
        if (line == NULL) return -1;
        w = PyBytes_AS_STRING(line);
        memcpy(w, o->body + s, len);
        if (stamp) {
            w[len] = ' ';
            memcpy(w + len + 1, o->ts, o->tslen);
        }
        if (PyList_Append(o->list, line) < 0) { Py_DECREF(line); return -1; }
        Py_DECREF(line);
        o->points++;
        return 0;
    }
    if (!o->copying) {
        if (!o->changed) {
            o->last_end = e;
            o->points++;
            return 0;
        }
        /* The first line not as sent, or after one dropped: the lines before it
         * (as sent, with the newlines between them) start the new body. */
        o->copying = 1;
        o->used = 0;
        if (o->points) {
            if (out_reserve(o, o->last_end) < 0) return -1;
            memcpy(scratch, o->body, o->last_end);
            o->used = o->last_end;
        }
    }
    if (out_reserve(o, len + 2 + o->tslen) < 0) return -1;
    w = scratch + o->used;
    if (o->points) *w++ = '\n';
    memcpy(w, o->body + s, len);
    w += len;
    if (stamp) {
        *w++ = ' ';
        memcpy(w, o->ts, o->tslen);
        w += o->tslen;
    }
    o->used = w - scratch;
    o->points++;
    return 0;
}

static int
fail(Py_ssize_t lineno, const unsigned char *line, Py_ssize_t len, const char *why)
{
    PyObject *exc = PyObject_CallFunction(LineProtocolError, "ny#s", lineno,
                                          (const char *)line, len, why);
    if (exc != NULL) {
        PyErr_SetObject(LineProtocolError, exc);
        Py_DECREF(exc);
    }
    return -1;
}

/* The end of body[s:e] less its trailing spaces (line.rstrip(b" ")). */
static inline Py_ssize_t
rstrip_spaces(const unsigned char *b, Py_ssize_t s, Py_ssize_t e)
{
    while (e > s && b[e - 1] == ' ') e--;
    return e;
}

/* ------------------------------------------------------------------------ */
/* Bodies without quotes or escaped newlines: _scan_lines                    */

/* _simple_line, from its words: ``n`` (4 for more than three) and the first
 * three (start, end) of the runs of non-spaces of body[s:e], a line with no
 * quote and no backslash. Returns 0 (forwarded or dropped) or -1 (raised). */
static inline int
words_line(Out *o, Py_ssize_t lineno, Py_ssize_t s, Py_ssize_t e, int differs,
           Py_ssize_t tok[3][2], int n)
{
    const unsigned char *b = o->body;
    Py_ssize_t i;

    if (n == 0 || b[tok[0][0]] == '#') return out_changed(o); /* blank, or a comment */
    if (n == 3) {
        if (skip_to(b, tok[1][0], tok[1][1], STOP_EQ) == tok[1][1])
            return fail(lineno, b + s, e - s, "invalid field format");
        i = tok[2][0];
        if (b[i] == '-') i++;
        if (i == tok[2][1] || !all_digits(b, i, tok[2][1]))
            return fail(lineno, b + s, e - s, "bad timestamp");
    } else if (n == 2) {
        if (skip_to(b, tok[1][0], tok[1][1], STOP_EQ) == tok[1][1])
            return fail(lineno, b + s, e - s, "missing fields");
    } else if (n == 1) {
        for (i = tok[0][0]; i < tok[0][1]; i++) {
            if (!IS_WS(b[i])) return fail(lineno, b + s, e - s, "missing fields");
        }
        return out_changed(o); /* whitespace only: a blank line */
    } else {
        return fail(lineno, b + s, e - s, "invalid field format");
    }
    if (b[tok[0][0]] == ',') return fail(lineno, b + s, e - s, "missing measurement");
    if (b[tok[1][0]] == '=') return fail(lineno, b + s, e - s, "missing field key");
    if (n == 3) return out_line(o, s, e, 0, differs);
    return out_line(o, s, rstrip_spaces(b, s, e), 1, differs);
}

/* _simple_line: a line with no quote and no backslash, split on spaces. */
static int
simple_line(Out *o, Py_ssize_t lineno, Py_ssize_t s, Py_ssize_t e, int differs)
{
    const unsigned char *b = o->body, *sp;
    Py_ssize_t tok[3][2], p = s, q;
    int n = 0;

    /* The first three words (runs of non-spaces), and whether there is a fourth. */
    for (;;) {
        while (p < e && b[p] == ' ') p++;
        if (p >= e) break;
        if (n == 3) { n = 4; break; }
        sp = memchr(b + p, ' ', e - p);
        q = sp ? sp - b : e;
        tok[n][0] = p;
        tok[n][1] = q;
        n++;
        p = q;
    }
    return words_line(o, lineno, s, e, differs, tok, n);
}

/* _match_line: a line with a backslash (and no quote or newline), checked by _LINE. */
static int
escaped_line(Out *o, Py_ssize_t lineno, Py_ssize_t s, Py_ssize_t e, int differs)
{
    const unsigned char *b = o->body;
    Py_ssize_t i = s, mend;
    int has_ts;

    while (i < e && IS_WS(b[i])) i++;
    if (i >= e || b[i] == '#') return out_changed(o); /* blank, or a comment */
    if (!match_line(b + s, e - s, &mend, &has_ts) || mend != e - s)
        return fail(lineno, b + s, e - s, reason(b, s, e));
    if (has_ts) return out_line(o, s, e, 0, differs);
    return out_line(o, s, rstrip_spaces(b, s, e), 1, differs);
}

static int
scan_lines(Out *o)
{
    const unsigned char *b = o->body;
    Py_ssize_t n = o->n, s = 0, p, le, lineno = 1, sp[2], tok[3][2];
    int spaces, more, escaped, differs, r;
    Events ev;

    events_init(&ev, b, n);
    for (;;) {
        /* To the end of the line, noting its first two spaces and any backslash. */
        spaces = more = escaped = 0;
        for (;;) {
            p = events_next(&ev);
            if (p >= n || b[p] == '\n') break;
            if (b[p] == '\\') {
                /* The line goes to _LINE: only its end matters here. */
                const unsigned char *nl = memchr(b + p, '\n', n - p);
                escaped = 1;
                p = nl ? nl - b : n;
                events_seek(&ev, p + 1);
                break;
            }
            if (spaces < 2) sp[spaces++] = p;
            else more = 1;
        }
        le = p;
        differs = 0;
        if (le > s && b[le - 1] == '\r') { le--; differs = 1; }
        if (escaped) {
            r = escaped_line(o, lineno, s, le, differs);
        } else if (!more && spaces && sp[0] > s &&
                   (spaces == 1 ? sp[0] + 1 < le : sp[0] + 1 < sp[1] && sp[1] + 1 < le)) {
            /* The usual line: two or three words, one space between each. */
            tok[0][0] = s;
            tok[0][1] = sp[0];
            tok[1][0] = sp[0] + 1;
            tok[1][1] = spaces == 1 ? le : sp[1];
            if (spaces == 2) {
                tok[2][0] = sp[1] + 1;
                tok[2][1] = le;
            }
            r = words_line(o, lineno, s, le, differs, tok, spaces + 1);
        } else {
            r = simple_line(o, lineno, s, le, differs);
        }
        if (r < 0) return -1;
        if (p >= n) return 0;
        s = p + 1;
        lineno++;
    }
}

/* ------------------------------------------------------------------------ */
/* Any other body: _scan_general                                             */

static int
scan_general(Out *o)
{
    const unsigned char *b = o->body;
    Py_ssize_t n = o->n, pos = 0, end, le, i, mend, lineno;
    const unsigned char *nl;
    int has_ts, differs;

    while (pos < n) {
        end = line_end(b, pos, n);
        /* Blank (a CRLF one too) or a comment, however long: dropped. */
        for (i = pos; i < end && IS_WS(b[i]); i++)
            ;
        if (i >= end || b[i] == '#') {
            if (out_changed(o) < 0) return -1;
            pos = end + 1;
            continue;
        }
        le = end;
        differs = 0;
        if (b[le - 1] == '\r') { le--; differs = 1; }
        if (!match_line(b + pos, le - pos, &mend, &has_ts) || mend != le - pos) {
            /* Named by its first physical line. */
            lineno = 1;
            for (nl = b; (nl = memchr(nl, '\n', b + pos - nl)) != NULL; nl++) lineno++;
            nl = memchr(b + pos, '\n', le - pos);
            end = nl ? nl - b : le;
            i = end;
            while (i > pos && b[i - 1] == '\r') i--;
            return fail(lineno, b + pos, i - pos, reason(b, pos, end));
        }
        if (has_ts) {
            if (out_line(o, pos, le, 0, differs) < 0) return -1;
        } else if (out_line(o, pos, rstrip_spaces(b, pos, le), 1, differs) < 0) {
            return -1;
        }
        pos = end + 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* scan() and prepare()                                                      */

/* Whether the body needs the general scan: a '"' or an escaped newline. */
static int
needs_general(const unsigned char *b, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    if (memchr(b, '"', n)) return 1;
    if (!memchr(b, '\\', n)) return 0;
#if defined(__SSE2__)
    /* 16 bytes at a time: a backslash whose next byte is a newline. */
    for (; i + 17 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i next = _mm_loadu_si128((const __m128i *)(b + i + 1));
        __m128i m = _mm_and_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')),
                                  _mm_cmpeq_epi8(next, _mm_set1_epi8('\n')));
        if (_mm_movemask_epi8(m)) return 1;
    }
#endif
    for (; i < n; i++) {
        if (b[i] == '\\' && i + 1 < n && b[i + 1] == '\n') return 1;
    }
    return 0;
}

static int
run(Out *o)
{
    if (needs_general(o->body, o->n)) return scan_general(o);
    return scan_lines(o);
}

static int
get_args(PyObject *const *args, Py_ssize_t nargs, const char *name, Out *o,
         Py_buffer *body_view, Py_buffer *ts_view)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (body, ts), %zd given",
                     name, nargs);
        return -1;
    }
    memset(o, 0, sizeof(*o));
    o->body_obj = args[0];
    /* bytes (what the relay gives) as they are; any other buffer through its view
     * (a view with no ``obj`` is not released). */
    body_view->obj = ts_view->obj = NULL;
    if (PyBytes_Check(args[0])) {
        o->body = (const unsigned char *)PyBytes_AS_STRING(args[0]);
        o->n = PyBytes_GET_SIZE(args[0]);
    } else if (PyObject_GetBuffer(args[0], body_view, PyBUF_SIMPLE) == 0) {
        o->body = body_view->buf;
        o->n = body_view->len;
    } else {
        return -1;
    }
    if (PyBytes_Check(args[1])) {
        o->ts = PyBytes_AS_STRING(args[1]);
        o->tslen = PyBytes_GET_SIZE(args[1]);
    } else if (PyObject_GetBuffer(args[1], ts_view, PyBUF_SIMPLE) == 0) {
        o->ts = ts_view->buf;
        o->tslen = ts_view->len;
    } else {
        PyBuffer_Release(body_view);
        return -1;
    }
    return 0;
}

/* (a, b), and (a, n) */
static PyObject *
pair(PyObject *a, PyObject *b)
{
    PyObject *t = PyTuple_New(2);
    if (t == NULL) return NULL;
    Py_INCREF(a);
    Py_INCREF(b);
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

static PyObject *
pair_n(PyObject *a, Py_ssize_t n)
{
    PyObject *t, *count = PyLong_FromSsize_t(n);
    if (count == NULL) return NULL;
    t = pair(a, count);
    Py_DECREF(count);
    return t;
}

PyDoc_STRVAR(scan_doc,
"scan(body, ts) -> (lines, changed)\n\n"
"influx_relay.lineprotocol.scan in C: the lines to forward (each line\n"
"lacking a timestamp stamped with ts) and whether any differs from the\n"
"body as sent. Raises LineProtocolError naming the first bad line.");

static PyObject *
c_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Out o;
    Py_buffer bv, tv;
    PyObject *result = NULL;

    if (get_args(args, nargs, "scan", &o, &bv, &tv) < 0) return NULL;
    o.list = PyList_New(0);
    if (o.list != NULL && run(&o) == 0)
        result = pair(o.list, o.changed ? Py_True : Py_False);
    Py_XDECREF(o.list);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&tv);
    return result;
}

PyDoc_STRVAR(prepare_doc,
"prepare(body, ts) -> (body, points)\n\n"
"influx_relay.lineprotocol.prepare in C: the body to forward (the very\n"
"object given when no line changed, else its lines joined by newlines)\n"
"and how many lines it holds, in one pass and without a list of lines.");

static PyObject *
c_prepare(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Out o;
    Py_buffer bv, tv;
    PyObject *result = NULL;

    if (get_args(args, nargs, "prepare", &o, &bv, &tv) < 0) return NULL;
    o.prepare = 1;
    if (run(&o) == 0) {
        if (!o.changed) {
            result = pair_n(o.body_obj, o.points);
        } else {
            PyObject *out;
            if (o.copying)
                out = PyBytes_FromStringAndSize(scratch, o.used);
            else
                out = PyBytes_FromStringAndSize((const char *)o.body, o.points ? o.last_end : 0);
            if (out != NULL) {
                result = pair_n(out, o.points);
                Py_DECREF(out);
            }
        }
    }
    scratch_done();
    PyBuffer_Release(&bv);
    PyBuffer_Release(&tv);
    return result;
}

PyDoc_STRVAR(times_doc,
"times(body) -> (start, end, count) or None\n\n"
"influx_relay.lineprotocol.python_times in C: the timestamps that end the\n"
"body's newline-separated pieces (the last space-separated token, after\n"
"trailing spaces, tabs and CRs, when it is an integer within int64).");

static PyObject *
c_times(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer bv;
    const unsigned char *b;
    Py_ssize_t len, pos = 0, count = 0;
    long long start = 0, end = 0;
    PyObject *result;

    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "times() takes exactly one argument");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &bv, PyBUF_SIMPLE) < 0) return NULL;
    b = (const unsigned char *)bv.buf;
    len = bv.len;
    for (;;) {
        const unsigned char *nl = pos < len ? memchr(b + pos, '\n', (size_t)(len - pos)) : NULL;
        Py_ssize_t stop = nl != NULL ? nl - b : len, e = stop, s, i;
        unsigned long long v = 0;
        int neg = 0, ok = 1;

        while (e > pos && (b[e - 1] == ' ' || b[e - 1] == '\t' || b[e - 1] == '\r')) e--;
        s = e;
        while (s > pos && b[s - 1] != ' ') s--;
        i = s;
        if (i < e && b[i] == '-') { neg = 1; i++; }
        if (i == e) ok = 0;  /* no digit */
        for (; ok && i < e; i++) {
            unsigned int c = (unsigned int)b[i] - '0';
            if (c > 9 || v > (UINT64_MAX - c) / 10) ok = 0;  /* not a digit, or past 64 bits */
            else v = v * 10 + c;
        }
        if (ok && v <= (neg ? (unsigned long long)INT64_MAX + 1 : (unsigned long long)INT64_MAX)) {
            long long t = !neg ? (long long)v
                        : v == (unsigned long long)INT64_MAX + 1 ? INT64_MIN : -(long long)v;
            if (count == 0 || t < start) start = t;
            if (count == 0 || t > end) end = t;
            count++;
        }
        if (nl == NULL) break;
        pos = stop + 1;
    }
    PyBuffer_Release(&bv);
    if (count == 0) Py_RETURN_NONE;
    result = Py_BuildValue("(LLn)", start, end, count);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))c_scan, METH_FASTCALL, scan_doc},
    {"prepare", (PyCFunction)(void (*)(void))c_prepare, METH_FASTCALL, prepare_doc},
    {"times", (PyCFunction)(void (*)(void))c_times, METH_FASTCALL, times_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "influx_relay._lineprotocol",
    "The line scanner of influx_relay.lineprotocol, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__lineprotocol(void)
{
    PyObject *m, *errors;

    init_stops();
    errors = PyImport_ImportModule("influx_relay.errors");
    if (errors == NULL) return NULL;
    LineProtocolError = PyObject_GetAttrString(errors, "LineProtocolError");
    Py_DECREF(errors);
    if (LineProtocolError == NULL) return NULL;
    m = PyModule_Create(&module);
    if (m == NULL) Py_CLEAR(LineProtocolError);
    return m;
}
