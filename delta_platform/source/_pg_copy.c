/*
 * PostgreSQL windows read as COPY ... TO STDOUT (FORMAT binary) on a libpq connection of the
 * reader's own, decoded straight into Arrow buffers.
 *
 * Why: ADBC PostgreSQL hands NUMERIC over as text (the caller had the server multiply it into
 * a bigint instead) and tells nothing of the COPY's row count (a second scan counted the
 * window). Here NUMERIC's base-10000 digits become decimal128 exactly, and the COPY's command
 * tag ("COPY n", the server's own tally of the rows it sent) is the window's count.
 *
 * Python (delta_platform/source/pg_copy.py) opens the reader, runs the transaction set-up
 * (`execute`: BEGIN, SET TRANSACTION SNAPSHOT of the exporting snapshot, set_config of the
 * bound values), checks the result's types (`describe`), starts the COPY (`copy`) and wraps the
 * buffers `fetch` returns with pa.Array.from_buffers. Rows arrive and are decoded with the GIL
 * released. Column kinds (decided in Python from the result's type OIDs and the catalog):
 *   K_BOOL           bool (bit-packed)
 *   K_INT16/32/64    signed integers of that width from int2/int4/int8 (range checked)
 *   K_FLOAT32/64     float4 / float8 (float4 widened exactly to float64 when asked)
 *   K_DECIMAL        decimal128(precision, scale) from NUMERIC, exact or an error
 *   K_DATE           date32 (days since 1970-01-01)
 *   K_TIMESTAMP      int64 microseconds since 1970-01-01 (timestamptz is UTC on the wire)
 *   K_TIME           int64 microseconds since midnight
 *   K_TEXT / K_BINARY  int32 offsets + bytes (text in the connection's UTF8)
 *   K_JSONB          jsonb's version-1 text
 *   K_UUID           the 16 bytes as 36-character text
 * Error messages never contain values.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <string.h>

#include "_arrow_out.h"

enum {
    K_BOOL = 0, K_INT16, K_INT32, K_INT64, K_FLOAT32, K_FLOAT64, K_DECIMAL, K_DATE, K_TIMESTAMP,
    K_TIME, K_TEXT, K_BINARY, K_JSONB, K_UUID
};

#define PG_EPOCH_DAYS 10957                  /* 2000-01-01 - 1970-01-01 */
#define PG_EPOCH_US (10957LL * 86400LL * 1000000LL)

static PyObject *Error;        /* the read failed */
static PyObject *Unsupported;  /* the result's columns are not what the plan expected */

typedef struct {
    ArrowOut out;              /* first: the batch's buffers (_arrow_out.h) */
    int kind;
    int precision;
    int scale;
    __int128 limit;            /* K_DECIMAL: 10^precision */
} Column;

typedef struct {
    PyObject_HEAD
    PGconn *pg;
    int ncols;
    Column *cols;
    int busy;                  /* a call runs without the GIL on this connection */
    int close_later;           /* close() came meanwhile (from another thread): close after it */
    int copying;               /* COPY OUT started, its end not yet seen */
    int header_read;
    int done;
    long long served;          /* the COPY's command tag, -1 until read */
    char *msg;                 /* the current CopyData message (libpq's) */
    int msg_len, msg_pos;
    /* error state set without the GIL */
    int err;                   /* 0 none, 1 server/protocol, 2 value */
    int err_col;
    char err_msg[512];
} Reader;

static void set_error(Reader *r, int kind, int col, const char *msg) {
    r->err = kind;
    r->err_col = col;
    snprintf(r->err_msg, sizeof r->err_msg, "%s", msg);
}

static void set_pg_error(Reader *r, const char *what) {
    const char *m = r->pg ? PQerrorMessage(r->pg) : "no connection";
    r->err = 1;
    r->err_col = -1;
    snprintf(r->err_msg, sizeof r->err_msg, "%s: %s", what, m);
    size_t n = strlen(r->err_msg);
    while (n && (r->err_msg[n - 1] == '\n' || r->err_msg[n - 1] == ' ')) r->err_msg[--n] = 0;
}

static PyObject *raise_error(Reader *r, PyObject *type) {
    PyObject *args = Py_BuildValue("(sii)", r->err_msg, r->err_col, r->err);
    if (args) {
        PyErr_SetObject(type, args);
        Py_DECREF(args);
    }
    r->err = 0;
    return NULL;
}

static PyObject *raise_result_error(Reader *r, PGresult *res, const char *what) {
    const char *m = res ? PQresultErrorMessage(res) : "";
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!m || !*m) m = r->pg ? PQerrorMessage(r->pg) : "the reader was closed";
    r->err = 1;
    r->err_col = -1;
    snprintf(r->err_msg, sizeof r->err_msg, "%s (SQLSTATE %s): %s", what, state ? state : "?", m);
    size_t n = strlen(r->err_msg);
    while (n && (r->err_msg[n - 1] == '\n' || r->err_msg[n - 1] == ' ')) r->err_msg[--n] = 0;
    if (res) PQclear(res);
    return raise_error(r, Error);
}

static void close_conn(Reader *r);

static int Reader_ok(Reader *r) {
    if (r->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is in use by another thread");
        return 0;
    }
    if (!r->pg) {
        PyErr_SetString(PyExc_ValueError, "the reader is closed");
        return 0;
    }
    return 1;
}

/* Around the libpq calls made without the GIL: one at a time, and a close() that came from
 * another thread meanwhile happens after them, never under them. */
#define UNLOCKED_BEGIN(r) r->busy = 1; Py_BEGIN_ALLOW_THREADS
#define UNLOCKED_END(r) Py_END_ALLOW_THREADS r->busy = 0; if (r->close_later) close_conn(r);

/* ---- big-endian reads ---------------------------------------------------------------------- */

static inline uint16_t be16(const char *p) {
    const uint8_t *u = (const uint8_t *)p;
    return (uint16_t)((u[0] << 8) | u[1]);
}
static inline uint32_t be32(const char *p) {
    const uint8_t *u = (const uint8_t *)p;
    return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
}
static inline uint64_t be64(const char *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void free_batch(Reader *r) { batch_clear(r->cols, sizeof(Column), r->ncols); }

static void free_cols(Reader *r) {
    free_batch(r);
    if (r->cols) {
        for (int i = 0; i < r->ncols; i++) out_release(&r->cols[i].out);
        PyMem_Free(r->cols);
    }
    r->cols = NULL;
    r->ncols = 0;
}

static void close_conn(Reader *r) {
    if (r->msg) {
        PQfreemem(r->msg);
        r->msg = NULL;
    }
    if (r->pg) {
        PGconn *pg = r->pg;
        r->pg = NULL;
        Py_BEGIN_ALLOW_THREADS
        PQfinish(pg);  /* an unfinished COPY ends with the connection (the server rolls back) */
        Py_END_ALLOW_THREADS
    }
    r->copying = 0;
    r->done = 1;
}

static void Reader_dealloc(Reader *r) {
    close_conn(r);
    free_cols(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* Reader(conninfo: bytes): connect (a libpq URI or key=value string), client_encoding UTF8. */
static int Reader_init(Reader *r, PyObject *args, PyObject *kwds) {
    const char *conninfo;
    if (!PyArg_ParseTuple(args, "y", &conninfo)) return -1;
    r->served = -1;
    const char *keys[] = {"dbname", "client_encoding", NULL};
    const char *vals[] = {conninfo, "UTF8", NULL};
    PGconn *pg;
    Py_BEGIN_ALLOW_THREADS
    pg = PQconnectdbParams(keys, vals, 1);
    Py_END_ALLOW_THREADS
    if (!pg) {
        PyErr_NoMemory();
        return -1;
    }
    r->pg = pg;
    if (PQstatus(pg) != CONNECTION_OK) {
        set_pg_error(r, "cannot connect");
        close_conn(r);
        raise_error(r, Error);
        return -1;
    }
    return 0;
}

/* execute(sql: bytes, params: tuple[bytes | None, ...]) -> None: one statement (or, without
 * params, several), its rows discarded. */
static PyObject *Reader_execute(Reader *r, PyObject *args) {
    const char *sql;
    PyObject *params;
    if (!PyArg_ParseTuple(args, "yO!", &sql, &PyTuple_Type, &params)) return NULL;
    if (!Reader_ok(r)) return NULL;
    if (r->copying) {
        PyErr_SetString(PyExc_ValueError, "a COPY is in progress");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(params);
    if (n > 64) {
        PyErr_SetString(PyExc_ValueError, "too many parameters");
        return NULL;
    }
    const char *values[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(params, i);
        if (v == Py_None) {
            values[i] = NULL;
        } else if (PyBytes_Check(v)) {
            values[i] = PyBytes_AS_STRING(v);
        } else {
            PyErr_SetString(PyExc_TypeError, "parameters must be bytes or None");
            return NULL;
        }
    }
    PGresult *res;
    PGconn *pg = r->pg;
    UNLOCKED_BEGIN(r)
    res = n ? PQexecParams(pg, sql, (int)n, NULL, values, NULL, NULL, 0) : PQexec(pg, sql);
    UNLOCKED_END(r)
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return raise_result_error(r, res, "statement failed");
    PQclear(res);
    Py_RETURN_NONE;
}

/* describe(sql: bytes) -> list[tuple[type_oid, typmod]] of the query's result columns. */
static PyObject *Reader_describe(Reader *r, PyObject *args) {
    const char *sql;
    if (!PyArg_ParseTuple(args, "y", &sql)) return NULL;
    if (!Reader_ok(r)) return NULL;
    PGresult *res;
    PGconn *pg = r->pg;
    UNLOCKED_BEGIN(r)
    res = PQprepare(pg, "", sql, 0, NULL);
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
        PQclear(res);
        res = PQdescribePrepared(pg, "");
    }
    UNLOCKED_END(r)
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) return raise_result_error(r, res, "describe failed");
    int n = PQnfields(res);
    PyObject *out = PyList_New(n);
    if (!out) {
        PQclear(res);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        PyObject *item = Py_BuildValue("(Ii)", (unsigned int)PQftype(res, i), PQfmod(res, i));
        if (!item) {
            Py_DECREF(out);
            PQclear(res);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    PQclear(res);
    return out;
}

static int fixed_width(int kind) {
    switch (kind) {
    case K_INT16: return 2;
    case K_INT32: case K_DATE: case K_FLOAT32: return 4;
    case K_INT64: case K_FLOAT64: case K_TIMESTAMP: case K_TIME: return 8;
    case K_DECIMAL: return 16;
    default: return 0;
    }
}

static int is_var(int kind) { return kind >= K_TEXT; }

/* copy(sql: bytes, plan: tuple[tuple[kind, precision, scale], ...]) -> None: start the COPY. */
static PyObject *Reader_copy(Reader *r, PyObject *args) {
    const char *sql;
    PyObject *plan;
    if (!PyArg_ParseTuple(args, "yO!", &sql, &PyTuple_Type, &plan)) return NULL;
    if (!Reader_ok(r)) return NULL;
    if (r->copying || r->cols) {
        PyErr_SetString(PyExc_ValueError, "a COPY was already started on this reader");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(plan);
    if (n < 1 || n > 1600) {
        PyErr_SetString(PyExc_ValueError, "a plan has 1 to 1600 columns");
        return NULL;
    }
    r->cols = PyMem_Calloc((size_t)n, sizeof(Column));
    if (!r->cols) return PyErr_NoMemory();
    r->ncols = (int)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Column *c = &r->cols[i];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(plan, i), "iii", &c->kind, &c->precision, &c->scale)) {
            free_cols(r);
            return NULL;
        }
        if (c->kind < K_BOOL || c->kind > K_UUID ||
            (c->kind == K_DECIMAL && (c->precision < 1 || c->precision > 38 || c->scale < 0 ||
                                      c->scale > c->precision))) {
            free_cols(r);
            PyErr_SetString(PyExc_ValueError, "bad column plan");
            return NULL;
        }
        c->out.width = fixed_width(c->kind);
        c->out.var = is_var(c->kind);
        c->out.bits = c->kind == K_BOOL;
        if (c->kind == K_DECIMAL) {
            c->limit = 1;
            for (int k = 0; k < c->precision; k++) c->limit *= 10;
        }
    }
    PGresult *res;
    PGconn *pg = r->pg;
    UNLOCKED_BEGIN(r)
    res = PQexec(pg, sql);
    UNLOCKED_END(r)
    if (!res || PQresultStatus(res) != PGRES_COPY_OUT || !r->pg) {
        free_cols(r);
        return raise_result_error(r, res, "COPY failed");
    }
    int binary = PQbinaryTuples(res), nf = PQnfields(res);
    PQclear(res);
    if (!binary || nf != r->ncols) {
        r->copying = 1;
        close_conn(r);
        free_cols(r);
        PyObject *a = Py_BuildValue("(sii)", "the COPY is not binary or has other columns than planned", -1, 0);
        if (a) {
            PyErr_SetObject(Unsupported, a);
            Py_DECREF(a);
        }
        return NULL;
    }
    r->copying = 1;
    Py_RETURN_NONE;
}

/* ---- decoding (no GIL) --------------------------------------------------------------------- */

static const __int128 POW10_4[5] = {1, 10, 100, 1000, 10000};

/* NUMERIC's binary form as the unscaled value at `scale`. 0 ok; -1 does not fit exactly;
 * -2 NaN or infinite. */
static int numeric_unscaled(const char *p, int32_t len, const Column *c, __int128 *out) {
    if (len < 8) return -1;
    int ndigits = (int16_t)be16(p), weight = (int16_t)be16(p + 2);
    uint16_t sign = be16(p + 4);
    if (sign == 0xC000 || sign == 0xD000 || sign == 0xF000) return -2;
    if ((sign != 0 && sign != 0x4000) || ndigits < 0 || len != 8 + 2 * ndigits) return -1;
    const __int128 cap = (c->limit - 1) / 10000; /* acc above this times 10^4 reaches 10^p */
    __int128 acc = 0;
    int last_e = 0, any = 0;
    for (int i = 0; i < ndigits; i++) {
        int d = (int16_t)be16(p + 8 + 2 * i);
        if (d < 0 || d > 9999) return -1;
        int e = 4 * (weight - i) + c->scale; /* this group's exponent in unscaled units */
        if (e >= 0) {
            if (acc > cap) return -1;
            acc = acc * 10000 + d;
            last_e = e;
            any = 1;
        } else if (e > -4) {
            /* the group straddles the scale: its low digits must be zero */
            __int128 div = POW10_4[-e];
            if (d % div) return -1;
            __int128 up = POW10_4[4 + e];
            if (any) {
                /* acc is in units of 10^last_e == 10^(e + 4) */
                for (int k = 0; k < last_e - (e + 4); k++) {
                    if (acc > (c->limit - 1) / 10) return -1;
                    acc *= 10;
                }
                last_e = e + 4;
            }
            if (acc > (c->limit - 1 - d / div) / up) return -1;
            acc = acc * up + d / div;
            last_e = 0;
            any = 1;
        } else if (d != 0) {
            return -1; /* more decimal places than the scale */
        }
    }
    for (int k = 0; k < last_e; k++) {
        if (acc > (c->limit - 1) / 10) return -1;
        acc *= 10;
    }
    if (acc >= c->limit) return -1;
    *out = sign == 0x4000 ? -acc : acc;
    return 0;
}

static const char HEX[] = "0123456789abcdef";

/* Append one value (not NULL) of column i at `row`. 0 ok, -1 error set on r. */
static int store_value(Reader *r, int i, Py_ssize_t row, const char *p, int32_t len) {
    Column *c = &r->cols[i];
    ArrowOut *o = &c->out;
    out_valid(o, row);
    switch (c->kind) {
    case K_BOOL:
        if (len != 1) goto bad;
        if (*p) ((uint8_t *)o->values)[row >> 3] |= (uint8_t)(1u << (row & 7));
        return 0;
    case K_INT16: case K_INT32: case K_INT64: {
        int64_t v;
        if (len == 8) v = (int64_t)be64(p);
        else if (len == 4) v = (int32_t)be32(p);
        else if (len == 2) v = (int16_t)be16(p);
        else goto bad;
        if (c->kind == K_INT16) {
            if (v < INT16_MIN || v > INT16_MAX) goto range;
            ((int16_t *)o->values)[row] = (int16_t)v;
        } else if (c->kind == K_INT32) {
            if (v < INT32_MIN || v > INT32_MAX) goto range;
            ((int32_t *)o->values)[row] = (int32_t)v;
        } else {
            ((int64_t *)o->values)[row] = v;
        }
        return 0;
    }
    case K_FLOAT32: {
        if (len != 4) goto bad;
        uint32_t u = be32(p);
        memcpy(o->values + row * 4, &u, 4);
        return 0;
    }
    case K_FLOAT64: {
        double d;
        if (len == 8) {
            uint64_t u = be64(p);
            memcpy(&d, &u, 8);
        } else if (len == 4) {
            uint32_t u = be32(p);
            float f;
            memcpy(&f, &u, 4);
            d = (double)f;
        } else {
            goto bad;
        }
        ((double *)o->values)[row] = d;
        return 0;
    }
    case K_DECIMAL: {
        __int128 v;
        int rc = numeric_unscaled(p, len, c, &v);
        if (rc == -2) {
            set_error(r, 2, i, "a NUMERIC value is NaN or infinite, which no Parquet decimal can hold");
            return -1;
        }
        if (rc < 0) {
            set_error(r, 2, i, "a NUMERIC value does not fit the column's decimal128 type exactly");
            return -1;
        }
        memcpy(o->values + row * 16, &v, 16);
        return 0;
    }
    case K_DATE: {
        if (len != 4) goto bad;
        int32_t d = (int32_t)be32(p);
        if (d == INT32_MAX || d == INT32_MIN || d > INT32_MAX - PG_EPOCH_DAYS) {
            set_error(r, 2, i, "a DATE value is infinite, which Parquet cannot hold");
            return -1;
        }
        ((int32_t *)o->values)[row] = d + PG_EPOCH_DAYS;
        return 0;
    }
    case K_TIMESTAMP: {
        if (len != 8) goto bad;
        int64_t t = (int64_t)be64(p);
        if (t == INT64_MAX || t == INT64_MIN || t > INT64_MAX - PG_EPOCH_US) {
            set_error(r, 2, i, "a TIMESTAMP value is infinite, which Parquet cannot hold");
            return -1;
        }
        ((int64_t *)o->values)[row] = t + PG_EPOCH_US;
        return 0;
    }
    case K_TIME:
        if (len != 8) goto bad;
        ((int64_t *)o->values)[row] = (int64_t)be64(p);
        return 0;
    default: {
        const char *src = p;
        int32_t n = len;
        if (c->kind == K_JSONB) {
            if (len < 1 || p[0] != 1) {
                set_error(r, 2, i, "a jsonb value has an unknown binary version");
                return -1;
            }
            src++;
            n--;
        } else if (c->kind == K_UUID) {
            if (len != 16) goto bad;
            n = 36;
        }
        int why = 0;
        if (out_reserve(o, (size_t)n, &why) < 0) {
            set_error(r, 2, i, why == 1 ? "a text/binary value is larger than an Arrow binary array holds"
                                        : "out of memory");
            return -1;
        }
        char *dst = o->data + o->data_len;
        if (c->kind == K_UUID) {
            for (int k = 0; k < 16; k++) {
                if (k == 4 || k == 6 || k == 8 || k == 10) *dst++ = '-';
                *dst++ = HEX[(uint8_t)src[k] >> 4];
                *dst++ = HEX[(uint8_t)src[k] & 15];
            }
        } else {
            memcpy(dst, src, (size_t)n);
        }
        o->data_len += (size_t)n;
        out_end_value(o, row);
        return 0;
    }
    }
bad:
    set_error(r, 1, i, "a value's binary length does not match its type");
    return -1;
range:
    set_error(r, 2, i, "an integer value is out of the column's Arrow type range");
    return -1;
}

/* Length of the complete row at p[0..n), 0 if incomplete, -1 malformed, -2 the trailer. */
static int row_length(const Reader *r, const char *p, int n) {
    if (n < 2) return 0;
    int16_t fields = (int16_t)be16(p);
    if (fields == -1) return -2;
    if (fields != r->ncols) return -1;
    int pos = 2;
    for (int i = 0; i < fields; i++) {
        if (n - pos < 4) return 0;
        int32_t len = (int32_t)be32(p + pos);
        pos += 4;
        if (len == -1) continue;
        if (len < 0) return -1;
        if (n - pos < len) return 0;
        pos += len;
    }
    return pos;
}

static int store_row(Reader *r, Py_ssize_t row, const char *p) {
    int pos = 2;
    for (int i = 0; i < r->ncols; i++) {
        int32_t len = (int32_t)be32(p + pos);
        pos += 4;
        if (len == -1) {
            out_null(&r->cols[i].out, row);
            continue;
        }
        if (store_value(r, i, row, p + pos, len) < 0) return -1;
        pos += len;
    }
    return 0;
}

/* Next CopyData message into r->msg; 1 got one, 0 the COPY ended (served set), -1 error. */
static int next_message(Reader *r) {
    if (r->msg) {
        PQfreemem(r->msg);
        r->msg = NULL;
    }
    char *buf = NULL;
    int n = PQgetCopyData(r->pg, &buf, 0);
    if (n > 0) {
        r->msg = buf;
        r->msg_len = n;
        r->msg_pos = 0;
        return 1;
    }
    if (n == -1) {
        PGresult *res = PQgetResult(r->pg);
        int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
        if (ok) {
            const char *tuples = PQcmdTuples(res);
            r->served = (tuples && *tuples) ? strtoll(tuples, NULL, 10) : -1;
        } else {
            const char *m = res ? PQresultErrorMessage(res) : PQerrorMessage(r->pg);
            const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
            r->err = 1;
            r->err_col = -1;
            snprintf(r->err_msg, sizeof r->err_msg, "COPY failed (SQLSTATE %s): %s", state ? state : "?", m);
            size_t k = strlen(r->err_msg);
            while (k && (r->err_msg[k - 1] == '\n' || r->err_msg[k - 1] == ' ')) r->err_msg[--k] = 0;
        }
        if (res) PQclear(res);
        while ((res = PQgetResult(r->pg)) != NULL) PQclear(res);
        r->copying = 0;
        return ok ? 0 : -1;
    }
    set_pg_error(r, "COPY failed");
    return -1;
}

static int read_header(Reader *r) {
    static const char sig[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};
    if (r->msg_len - r->msg_pos < 19 || memcmp(r->msg + r->msg_pos, sig, 11) != 0) {
        set_error(r, 1, -1, "the COPY stream has no binary header");
        return -1;
    }
    int32_t ext = (int32_t)be32(r->msg + r->msg_pos + 15);
    if (ext < 0 || r->msg_len - r->msg_pos - 19 < ext) {
        set_error(r, 1, -1, "the COPY stream's header is malformed");
        return -1;
    }
    r->msg_pos += 19 + ext;
    r->header_read = 1;
    return 0;
}

/* Decode up to max_rows rows. Returns rows stored, -1 on error. Sets r->done at the end.
 * PostgreSQL sends each row as one CopyData message (the header rides with the first, the
 * trailer comes alone), so a row cut across messages is treated as a malformed stream. */
static Py_ssize_t decode_rows(Reader *r, Py_ssize_t max_rows) {
    Py_ssize_t rows = 0;
    while (rows < max_rows) {
        if (!r->msg || r->msg_pos >= r->msg_len) {
            int got = next_message(r);
            if (got < 0) return -1;
            if (got == 0) {
                r->done = 1;
                break;
            }
            if (!r->header_read) {
                if (read_header(r) < 0) return -1;
                continue;
            }
        }
        const char *p = r->msg + r->msg_pos;
        int n = row_length(r, p, r->msg_len - r->msg_pos);
        if (n == -2) { /* the trailer; the COPY's end follows */
            r->msg_pos += 2;
            continue;
        }
        if (n <= 0) {
            set_error(r, 1, -1, n == 0 ? "the COPY stream cut a row across messages"
                                       : "the COPY stream is malformed (field count)");
            return -1;
        }
        if (store_row(r, rows, p) < 0) return -1;
        rows++;
        r->msg_pos += n;
        if (batch_full(r->cols, sizeof(Column), r->ncols)) break;
    }
    return rows;
}

/* fetch(max_rows) -> None at the end, else (rows, [(validity|None, null_count, values, data|None)]) */
static PyObject *Reader_fetch(Reader *r, PyObject *arg) {
    Py_ssize_t max_rows = PyLong_AsSsize_t(arg);
    if (max_rows == -1 && PyErr_Occurred()) return NULL;
    if (max_rows < 1) max_rows = 1;
    if (r->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is in use by another thread");
        return NULL;
    }
    if (r->done || !r->pg || !r->copying) Py_RETURN_NONE;

    if (batch_begin(r->cols, sizeof(Column), r->ncols, max_rows) < 0) return NULL;

    Py_ssize_t rows;
    int closed_meanwhile;
    UNLOCKED_BEGIN(r)
    rows = decode_rows(r, max_rows);
    UNLOCKED_END(r)
    closed_meanwhile = !r->pg;
    if (closed_meanwhile && rows >= 0) rows = 0; /* close() asked for it: no more rows */
    if (rows < 0) {
        free_batch(r);
        close_conn(r); /* a broken COPY leaves nothing worth keeping on this connection */
        return raise_error(r, Error);
    }
    if (rows == 0) {
        free_batch(r);
        Py_RETURN_NONE;
    }
    return batch_take(r->cols, sizeof(Column), r->ncols, rows);
}

static PyObject *Reader_close(Reader *r, PyObject *unused) {
    if (r->busy) {
        r->close_later = 1; /* the call running without the GIL closes when it ends */
        Py_RETURN_NONE;
    }
    close_conn(r);
    Py_RETURN_NONE;
}

static PyObject *Reader_get_done(Reader *r, void *closure) { return PyBool_FromLong(r->done); }

static PyObject *Reader_get_served(Reader *r, void *closure) {
    if (r->served < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(r->served);
}

static PyMethodDef Reader_methods[] = {
    {"execute", (PyCFunction)Reader_execute, METH_VARARGS,
     "execute(sql, params) -> None: run a statement with text parameters (bound, never inlined)."},
    {"describe", (PyCFunction)Reader_describe, METH_VARARGS,
     "describe(sql) -> [(type_oid, typmod)] of the query's result columns."},
    {"copy", (PyCFunction)Reader_copy, METH_VARARGS,
     "copy(sql, plan) -> None: start COPY ... TO STDOUT (FORMAT binary) with a column plan."},
    {"fetch", (PyCFunction)Reader_fetch, METH_O,
     "fetch(max_rows) -> None at the end, else (rows, [(validity, null_count, values, data)])"},
    {"close", (PyCFunction)Reader_close, METH_NOARGS, "Close the connection; idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"done", (getter)Reader_get_done, NULL, "True once the whole COPY was read", NULL},
    {"served", (getter)Reader_get_served, NULL, "The COPY's row count (its command tag) once read, else None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "delta_platform.source._pg_copy.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A libpq connection streaming one binary COPY into Arrow buffers.",
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
    .tp_init = (initproc)Reader_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pg_copy",
    "Binary COPY reads of PostgreSQL windows into Arrow buffers (see pg_copy.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__pg_copy(void) {
    if (PyType_Ready(&ReaderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Error = PyErr_NewException("delta_platform.source._pg_copy.Error", NULL, NULL);
    Unsupported = PyErr_NewException("delta_platform.source._pg_copy.Unsupported", Error, NULL);
    Py_INCREF(&ReaderType);
    if (!Error || !Unsupported || PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0 ||
        PyModule_AddObject(m, "Error", Error) < 0 || PyModule_AddObject(m, "Unsupported", Unsupported) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    static const struct { const char *name; int value; } kinds[] = {
        {"K_BOOL", K_BOOL}, {"K_INT16", K_INT16}, {"K_INT32", K_INT32}, {"K_INT64", K_INT64},
        {"K_FLOAT32", K_FLOAT32}, {"K_FLOAT64", K_FLOAT64}, {"K_DECIMAL", K_DECIMAL},
        {"K_DATE", K_DATE}, {"K_TIMESTAMP", K_TIMESTAMP}, {"K_TIME", K_TIME}, {"K_TEXT", K_TEXT},
        {"K_BINARY", K_BINARY}, {"K_JSONB", K_JSONB}, {"K_UUID", K_UUID},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        PyModule_AddIntConstant(m, kinds[i].name, kinds[i].value);
    return m;
}
