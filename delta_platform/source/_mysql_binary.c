/*
 * Binary-protocol (prepared statement) reads of MySQL/MariaDB windows into Arrow buffers.
 *
 * Runs on the caller's mysqlclient connection (its MYSQL* from
 * `conn._get_native_connection()`), so the read stays inside the caller's snapshot
 * transaction. Rows are streamed with mysql_stmt_fetch (no mysql_stmt_store_result) and
 * decoded into per-column Arrow buffers (validity bitmap, fixed-width values, or offsets +
 * data) for up to N rows per call, with the GIL released while rows arrive and are decoded.
 * Python (delta_platform/source/mysql_binary.py) wraps the buffers with pa.Array.from_buffers.
 *
 * Column kinds (decided in Python from the catalog before executing, checked here against the
 * prepared statement's result metadata):
 *   K_INT8/16/32/64  signed integers of that width, any integer field (range checked)
 *   K_DOUBLE         DOUBLE
 *   K_DECIMAL        decimal128(precision, scale) from NEWDECIMAL text, exact
 *   K_DATE           date32 (days since 1970-01-01)
 *   K_TIMESTAMP      int64 microseconds since 1970-01-01 00:00 of the wall clock given
 *                    (the session time zone for TIMESTAMP, which the caller pins to UTC)
 *   K_TEXT / K_BINARY  int32 offsets + bytes (text arrives in character_set_results)
 * Error messages never contain values.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <mysql.h>
#include <stdint.h>
#include <string.h>

#include "_arrow_out.h"

enum { K_INT8 = 0, K_INT16, K_INT32, K_INT64, K_DOUBLE, K_DECIMAL, K_DATE, K_TIMESTAMP, K_TEXT, K_BINARY };

#define SCRATCH_FIXED 96          /* decimal text: at most 65 digits, sign and point */
#define SCRATCH_VAR (64 * 1024)   /* initial scratch for one text/binary value */

static PyObject *Error;        /* the read failed */
static PyObject *Unsupported;  /* the result's columns are not what the plan expected */

typedef struct {
    ArrowOut out;              /* first: the batch's buffers (_arrow_out.h) */
    int kind;
    int precision;
    int scale;
    enum enum_field_types ftype;
    int is_unsigned;
    /* result bind target */
    my_bool is_null;
    my_bool error;
    unsigned long length;
    union {
        int8_t i8;
        uint8_t u8;
        int16_t i16;
        uint16_t u16;
        int32_t i32;
        uint32_t u32;
        int64_t i64;
        double f64;
        MYSQL_TIME tm;
        char text[SCRATCH_FIXED];
    } fixed;
    char *scratch;             /* var-length scratch */
    unsigned long scratch_cap;
} Column;

typedef struct {
    PyObject_HEAD
    PyObject *conn;            /* keeps the mysqlclient connection (and its MYSQL*) alive */
    MYSQL *mysql;
    MYSQL_STMT *stmt;
    int ncols;
    Column *cols;
    MYSQL_BIND *binds;
    int done;
    /* error state set without the GIL */
    int err;                   /* 0 none, 1 server/client, 2 value */
    int err_col;
    char err_msg[512];
} Reader;

static void set_value_error(Reader *r, int col, const char *msg) {
    r->err = 2;
    r->err_col = col;
    snprintf(r->err_msg, sizeof r->err_msg, "%s", msg);
}

static void set_stmt_error(Reader *r, int col) {
    r->err = 1;
    r->err_col = col;
    snprintf(r->err_msg, sizeof r->err_msg, "MySQL error %u (%s): %s", mysql_stmt_errno(r->stmt),
             mysql_stmt_sqlstate(r->stmt), mysql_stmt_error(r->stmt));
}

static void raise_unsupported(const char *msg, int col) {
    PyObject *args = Py_BuildValue("(sii)", msg, col, 0);
    if (args) {
        PyErr_SetObject(Unsupported, args);
        Py_DECREF(args);
    }
}

static PyObject *raise_reader_error(Reader *r, PyObject *type) {
    PyObject *args = Py_BuildValue("(sii)", r->err_msg, r->err_col, r->err);
    if (args) {
        PyErr_SetObject(type, args);
        Py_DECREF(args);
    }
    r->err = 0;
    return NULL;
}

/* ---- value decoding ---------------------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static const unsigned char month_days[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

static int valid_date(const MYSQL_TIME *t) {
    return t->year >= 1 && t->year <= 9999 && t->month >= 1 && t->month <= 12 && t->day >= 1 &&
           t->day <= month_days[t->month];
}

/* NEWDECIMAL text to a decimal128 unscaled value; 0 on success. */
static int parse_decimal(const char *s, unsigned long n, int precision, int scale, __int128 *out) {
    unsigned long i = 0;
    int neg = 0, frac = -1, digits = 0;
    unsigned __int128 acc = 0;
    if (n == 0) return -1;
    if (s[0] == '-' || s[0] == '+') {
        neg = s[0] == '-';
        i = 1;
    }
    for (; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (frac >= 0) return -1;
            frac = 0;
            continue;
        }
        if (c < '0' || c > '9') return -1;
        if (frac >= 0) {
            if (frac >= scale) {
                if (c != '0') return -2;  /* more fractional digits than the scale holds */
                continue;
            }
            frac++;
        }
        if (acc == 0 && c == '0') {
            continue;
        }
        if (++digits > 38) return -3;
        acc = acc * 10 + (unsigned)(c - '0');
    }
    if (frac < 0) frac = 0;
    for (; frac < scale; frac++) {
        if (acc != 0 && ++digits > 38) return -3;
        acc *= 10;
    }
    /* |value| < 10^precision */
    unsigned __int128 limit = 1;
    for (int k = 0; k < precision; k++) limit *= 10;
    if (acc >= limit) return -3;
    *out = neg ? -(__int128)acc : (__int128)acc;
    return 0;
}

/* ---- reader ------------------------------------------------------------------------------ */

static void free_batch(Reader *r) { batch_clear(r->cols, sizeof(Column), r->ncols); }

static void close_stmt(Reader *r) {
    if (r->stmt) {
        MYSQL_STMT *stmt = r->stmt;
        r->stmt = NULL;
        Py_BEGIN_ALLOW_THREADS
        /* an unread result is drained by the close: the connection is usable afterwards */
        mysql_stmt_free_result(stmt);
        mysql_stmt_close(stmt);
        Py_END_ALLOW_THREADS
    }
}

static void Reader_dealloc(Reader *r) {
    close_stmt(r);
    free_batch(r);
    if (r->cols) {
        for (int i = 0; i < r->ncols; i++) {
            free(r->cols[i].scratch);
            out_release(&r->cols[i].out);
        }
        PyMem_Free(r->cols);
    }
    PyMem_Free(r->binds);
    Py_XDECREF(r->conn);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int field_fits(int kind, const MYSQL_FIELD *f) {
    switch (kind) {
    case K_INT8: case K_INT16: case K_INT32: case K_INT64:
        switch (f->type) {
        case MYSQL_TYPE_TINY: case MYSQL_TYPE_SHORT: case MYSQL_TYPE_INT24: case MYSQL_TYPE_LONG:
            return 1;
        case MYSQL_TYPE_LONGLONG:
            return !(f->flags & UNSIGNED_FLAG);
        default:
            return 0;
        }
    case K_DOUBLE:
        return f->type == MYSQL_TYPE_DOUBLE;
    case K_DECIMAL:
        return f->type == MYSQL_TYPE_NEWDECIMAL || f->type == MYSQL_TYPE_DECIMAL;
    case K_DATE:
        return f->type == MYSQL_TYPE_DATE || f->type == MYSQL_TYPE_NEWDATE;
    case K_TIMESTAMP:
        return f->type == MYSQL_TYPE_TIMESTAMP || f->type == MYSQL_TYPE_DATETIME;
    case K_TEXT: case K_BINARY:
        switch (f->type) {
        case MYSQL_TYPE_VARCHAR: case MYSQL_TYPE_VAR_STRING: case MYSQL_TYPE_STRING:
        case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB: case MYSQL_TYPE_LONG_BLOB:
        case MYSQL_TYPE_BLOB: case MYSQL_TYPE_ENUM: case MYSQL_TYPE_SET:
            return (f->charsetnr == 63) == (kind == K_BINARY);
        default:
            return 0;
        }
    }
    return 0;
}

static int bind_param(MYSQL_BIND *b, PyObject *v, PyObject *keep, MYSQL_TIME *tm, long long *iv,
                      double *dv) {
    memset(b, 0, sizeof *b);
    if (v == Py_None) {
        b->buffer_type = MYSQL_TYPE_NULL;
        return 0;
    }
    if (PyBool_Check(v) || PyLong_Check(v)) {
        int overflow = 0;
        *iv = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (*iv == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            PyErr_SetString(PyExc_OverflowError, "an integer parameter does not fit in 64 bits");
            return -1;
        }
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = iv;
        return 0;
    }
    if (PyFloat_Check(v)) {
        *dv = PyFloat_AS_DOUBLE(v);
        b->buffer_type = MYSQL_TYPE_DOUBLE;
        b->buffer = dv;
        return 0;
    }
    if (PyTuple_Check(v) && PyTuple_GET_SIZE(v) == 2) {
        /* (tag, payload) prepared by Python: ("decimal", bytes) / ("date", (y,m,d)) /
           ("datetime", (y,m,d,H,M,S,us)) */
        const char *tag = PyUnicode_Check(PyTuple_GET_ITEM(v, 0)) ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(v, 0)) : NULL;
        PyObject *payload = PyTuple_GET_ITEM(v, 1);
        if (tag && strcmp(tag, "decimal") == 0 && PyBytes_Check(payload)) {
            b->buffer_type = MYSQL_TYPE_NEWDECIMAL;
            b->buffer = PyBytes_AS_STRING(payload);
            b->buffer_length = (unsigned long)PyBytes_GET_SIZE(payload);
            if (PyList_Append(keep, payload) < 0) return -1;
            return 0;
        }
        if (tag && (strcmp(tag, "date") == 0 || strcmp(tag, "datetime") == 0) && PyTuple_Check(payload)) {
            unsigned int f[7] = {0, 0, 0, 0, 0, 0, 0};
            Py_ssize_t n = PyTuple_GET_SIZE(payload);
            if (n > 7) n = 7;
            for (Py_ssize_t k = 0; k < n; k++) {
                f[k] = (unsigned int)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(payload, k));
                if (PyErr_Occurred()) return -1;
            }
            memset(tm, 0, sizeof *tm);
            tm->year = f[0]; tm->month = f[1]; tm->day = f[2];
            tm->hour = f[3]; tm->minute = f[4]; tm->second = f[5]; tm->second_part = f[6];
            if (strcmp(tag, "date") == 0) {
                tm->time_type = MYSQL_TIMESTAMP_DATE;
                b->buffer_type = MYSQL_TYPE_DATE;
            } else {
                tm->time_type = MYSQL_TIMESTAMP_DATETIME;
                b->buffer_type = MYSQL_TYPE_DATETIME;
            }
            b->buffer = tm;
            b->buffer_length = sizeof *tm;
            return 0;
        }
    }
    if (PyBytes_Check(v)) {
        /* text, already encoded in the connection's character set */
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = PyBytes_AS_STRING(v);
        b->buffer_length = (unsigned long)PyBytes_GET_SIZE(v);
        if (PyList_Append(keep, v) < 0) return -1;
        return 0;
    }
    if (PyByteArray_Check(v)) {
        PyObject *copy = PyBytes_FromObject(v);
        if (!copy) return -1;
        b->buffer_type = MYSQL_TYPE_BLOB;
        b->buffer = PyBytes_AS_STRING(copy);
        b->buffer_length = (unsigned long)PyBytes_GET_SIZE(copy);
        int rc = PyList_Append(keep, copy);
        Py_DECREF(copy);
        return rc;
    }
    PyErr_Format(PyExc_TypeError, "unsupported parameter type %s", Py_TYPE(v)->tp_name);
    return -1;
}

/* Reader(capsule, conn, sql: bytes, params: tuple, columns: tuple[(kind, precision, scale)]) */
static int Reader_init(Reader *r, PyObject *args, PyObject *kwds) {
    PyObject *capsule, *conn, *params, *columns;
    const char *sql;
    Py_ssize_t sql_len;
    if (!PyArg_ParseTuple(args, "OOy#O!O!", &capsule, &conn, &sql, &sql_len, &PyTuple_Type, &params,
                          &PyTuple_Type, &columns))
        return -1;
    if (r->stmt || r->cols) {
        PyErr_SetString(PyExc_RuntimeError, "Reader is already initialised");
        return -1;
    }
    MYSQL *mysql = PyCapsule_GetPointer(capsule, "_mysql.connection.native_connection");
    if (!mysql) return -1;
    Py_INCREF(conn);
    r->conn = conn;
    r->mysql = mysql;

    Py_ssize_t ncols = PyTuple_GET_SIZE(columns);
    r->ncols = (int)ncols;
    r->cols = PyMem_Calloc(ncols ? ncols : 1, sizeof(Column));
    r->binds = PyMem_Calloc(ncols ? ncols : 1, sizeof(MYSQL_BIND));
    if (!r->cols || !r->binds) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Column *c = &r->cols[i];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(columns, i), "iii", &c->kind, &c->precision, &c->scale)) return -1;
        if (c->kind < K_INT8 || c->kind > K_BINARY || (c->kind == K_DECIMAL && (c->precision < 1 || c->precision > 38 || c->scale < 0 || c->scale > c->precision))) {
            PyErr_SetString(PyExc_ValueError, "bad column plan");
            return -1;
        }
        static const int widths[] = {1, 2, 4, 8, 8, 16, 4, 8, 4, 4};
        c->out.var = c->kind == K_TEXT || c->kind == K_BINARY;
        c->out.width = c->out.var ? 0 : widths[c->kind];
    }

    MYSQL_STMT *stmt = mysql_stmt_init(mysql);
    if (!stmt) {
        PyErr_Format(Error, "MySQL error %u: %s", mysql_errno(mysql), mysql_error(mysql));
        return -1;
    }
    r->stmt = stmt;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mysql_stmt_prepare(stmt, sql, (unsigned long)sql_len);
    Py_END_ALLOW_THREADS
    if (rc) {
        set_stmt_error(r, -1);
        raise_reader_error(r, Error);
        return -1;
    }
    /* the result's columns must be what the plan expects, before anything runs */
    if ((Py_ssize_t)mysql_stmt_field_count(stmt) != ncols) {
        raise_unsupported("column count differs from the plan", -1);
        return -1;
    }
    MYSQL_RES *meta = mysql_stmt_result_metadata(stmt);
    if (!meta) {
        set_stmt_error(r, -1);
        raise_reader_error(r, Error);
        return -1;
    }
    MYSQL_FIELD *fields = mysql_fetch_fields(meta);
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Column *c = &r->cols[i];
        if (!field_fits(c->kind, &fields[i])) {
            mysql_free_result(meta);
            raise_unsupported("result column type differs from the plan", (int)i);
            return -1;
        }
        c->ftype = fields[i].type;
        c->is_unsigned = (fields[i].flags & UNSIGNED_FLAG) != 0;
    }
    mysql_free_result(meta);

    /* parameters */
    Py_ssize_t np = PyTuple_GET_SIZE(params);
    if ((Py_ssize_t)mysql_stmt_param_count(stmt) != np) {
        PyErr_SetString(PyExc_ValueError, "parameter count differs from the statement's placeholders");
        return -1;
    }
    MYSQL_BIND *pb = PyMem_Calloc(np ? np : 1, sizeof(MYSQL_BIND));
    MYSQL_TIME *ptm = PyMem_Calloc(np ? np : 1, sizeof(MYSQL_TIME));
    long long *piv = PyMem_Calloc(np ? np : 1, sizeof(long long));
    double *pdv = PyMem_Calloc(np ? np : 1, sizeof(double));
    PyObject *keep = PyList_New(0);
    int ok = pb && ptm && piv && pdv && keep;
    if (!ok) PyErr_NoMemory();
    for (Py_ssize_t k = 0; ok && k < np; k++)
        ok = bind_param(&pb[k], PyTuple_GET_ITEM(params, k), keep, &ptm[k], &piv[k], &pdv[k]) == 0;
    if (ok && np && mysql_stmt_bind_param(stmt, pb)) {
        set_stmt_error(r, -1);
        raise_reader_error(r, Error);
        ok = 0;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        rc = mysql_stmt_execute(stmt);
        Py_END_ALLOW_THREADS
        if (rc) {
            set_stmt_error(r, -1);
            raise_reader_error(r, Error);
            ok = 0;
        }
    }
    PyMem_Free(pb);
    PyMem_Free(ptm);
    PyMem_Free(piv);
    PyMem_Free(pdv);
    Py_XDECREF(keep);
    if (!ok) return -1;

    /* result binds */
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Column *c = &r->cols[i];
        MYSQL_BIND *b = &r->binds[i];
        b->is_null = &c->is_null;
        b->error = &c->error;
        b->length = &c->length;
        switch (c->kind) {
        case K_INT8: case K_INT16: case K_INT32: case K_INT64:
            b->buffer_type = c->ftype == MYSQL_TYPE_INT24 ? MYSQL_TYPE_LONG : c->ftype;
            b->buffer = &c->fixed.i64;
            b->buffer_length = 8;
            b->is_unsigned = c->is_unsigned;
            break;
        case K_DOUBLE:
            b->buffer_type = MYSQL_TYPE_DOUBLE;
            b->buffer = &c->fixed.f64;
            b->buffer_length = 8;
            break;
        case K_DECIMAL:
            b->buffer_type = MYSQL_TYPE_STRING;
            b->buffer = c->fixed.text;
            b->buffer_length = SCRATCH_FIXED;
            break;
        case K_DATE: case K_TIMESTAMP:
            b->buffer_type = c->kind == K_DATE ? MYSQL_TYPE_DATE : MYSQL_TYPE_DATETIME;
            b->buffer = &c->fixed.tm;
            b->buffer_length = sizeof(MYSQL_TIME);
            break;
        default:
            c->scratch = malloc(SCRATCH_VAR);
            if (!c->scratch) {
                PyErr_NoMemory();
                return -1;
            }
            c->scratch_cap = SCRATCH_VAR;
            b->buffer_type = c->kind == K_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
            b->buffer = c->scratch;
            b->buffer_length = SCRATCH_VAR;
        }
    }
    if (ncols && mysql_stmt_bind_result(stmt, r->binds)) {
        set_stmt_error(r, -1);
        raise_reader_error(r, Error);
        return -1;
    }
    return 0;
}

/* One row already fetched into the binds: append it at `row`. 0 ok, -1 error set on r. */
static int store_row(Reader *r, Py_ssize_t row) {
    for (int i = 0; i < r->ncols; i++) {
        Column *c = &r->cols[i];
        ArrowOut *o = &c->out;
        if (c->is_null) {
            out_null(o, row);
            continue;
        }
        out_valid(o, row);
        switch (c->kind) {
        case K_INT8: case K_INT16: case K_INT32: case K_INT64: {
            int64_t v;
            int big_unsigned = 0;
            switch (c->ftype) {
            case MYSQL_TYPE_TINY:
                v = c->is_unsigned ? (int64_t)c->fixed.u8 : (int64_t)c->fixed.i8;
                break;
            case MYSQL_TYPE_SHORT:
                v = c->is_unsigned ? (int64_t)c->fixed.u16 : (int64_t)c->fixed.i16;
                break;
            case MYSQL_TYPE_LONG: case MYSQL_TYPE_INT24:
                v = c->is_unsigned ? (int64_t)c->fixed.u32 : (int64_t)c->fixed.i32;
                break;
            default:
                v = c->fixed.i64;
                big_unsigned = c->is_unsigned && v < 0;
            }
            switch (c->kind) {
            case K_INT8:
                if (big_unsigned || v < INT8_MIN || v > INT8_MAX) goto range;
                *(int8_t *)(o->values + row) = (int8_t)v;
                break;
            case K_INT16:
                if (big_unsigned || v < INT16_MIN || v > INT16_MAX) goto range;
                ((int16_t *)o->values)[row] = (int16_t)v;
                break;
            case K_INT32:
                if (big_unsigned || v < INT32_MIN || v > INT32_MAX) goto range;
                ((int32_t *)o->values)[row] = (int32_t)v;
                break;
            default:
                if (big_unsigned) goto range;
                ((int64_t *)o->values)[row] = v;
            }
            break;
        range:
            set_value_error(r, i, "an integer value is out of the column's Arrow type range");
            return -1;
        }
        case K_DOUBLE:
            ((double *)o->values)[row] = c->fixed.f64;
            break;
        case K_DECIMAL: {
            __int128 v;
            if (c->length >= SCRATCH_FIXED ||
                parse_decimal(c->fixed.text, c->length, c->precision, c->scale, &v) != 0) {
                set_value_error(r, i, "a DECIMAL value does not fit the column's decimal128 type exactly");
                return -1;
            }
            memcpy(o->values + row * 16, &v, 16);
            break;
        }
        case K_DATE: {
            const MYSQL_TIME *t = &c->fixed.tm;
            if (!valid_date(t)) {
                set_value_error(r, i, "a DATE value is a zero or invalid date");
                return -1;
            }
            ((int32_t *)o->values)[row] = (int32_t)days_from_civil(t->year, t->month, t->day);
            break;
        }
        case K_TIMESTAMP: {
            const MYSQL_TIME *t = &c->fixed.tm;
            if (!valid_date(t) || t->hour > 23 || t->minute > 59 || t->second > 59 || t->second_part > 999999) {
                set_value_error(r, i, "a DATETIME/TIMESTAMP value is a zero or invalid date");
                return -1;
            }
            int64_t days = days_from_civil(t->year, t->month, t->day);
            int64_t secs = days * 86400 + t->hour * 3600 + t->minute * 60 + t->second;
            ((int64_t *)o->values)[row] = secs * 1000000 + (int64_t)t->second_part;
            break;
        }
        default: {
            unsigned long len = c->length;
            int why = 0;
            if (out_reserve(o, len, &why) < 0) {
                set_value_error(r, i, why == 1 ? "a text/binary value is larger than an Arrow binary array holds"
                                               : "out of memory");
                return -1;
            }
            if (len <= c->scratch_cap) {
                memcpy(o->data + o->data_len, c->scratch, len);
            } else {
                /* truncated into the scratch: fetch the whole value straight into the data */
                MYSQL_BIND b;
                unsigned long got = 0;
                my_bool isnull = 0, err = 0;
                memset(&b, 0, sizeof b);
                b.buffer_type = c->kind == K_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
                b.buffer = o->data + o->data_len;
                b.buffer_length = len;
                b.length = &got;
                b.is_null = &isnull;
                b.error = &err;
                if (mysql_stmt_fetch_column(r->stmt, &b, (unsigned)i, 0)) {
                    set_stmt_error(r, i);
                    return -1;
                }
                if (got != len) {
                    set_value_error(r, i, "a text/binary value changed length while being read");
                    return -1;
                }
            }
            o->data_len += len;
            out_end_value(o, row);
        }
        }
    }
    return 0;
}

/* fetch(max_rows) -> None at the end, else (rows, [(validity|None, null_count, values, data|None)]) */
static PyObject *Reader_fetch(Reader *r, PyObject *arg) {
    Py_ssize_t max_rows = PyLong_AsSsize_t(arg);
    if (max_rows == -1 && PyErr_Occurred()) return NULL;
    if (max_rows < 1) max_rows = 1;
    if (r->done || !r->stmt) Py_RETURN_NONE;

    if (batch_begin(r->cols, sizeof(Column), r->ncols, max_rows) < 0) return NULL;

    Py_ssize_t rows = 0;
    int rc = 0, failed = 0;
    Py_BEGIN_ALLOW_THREADS
    while (rows < max_rows) {
        rc = mysql_stmt_fetch(r->stmt);
        if (rc == MYSQL_NO_DATA) {
            r->done = 1;
            break;
        }
        if (rc == 1) {
            set_stmt_error(r, -1);
            failed = 1;
            break;
        }
        /* 0, or MYSQL_DATA_TRUNCATED: a long text/binary value (fetched whole in store_row) */
        if (store_row(r, rows) < 0) {
            failed = 1;
            break;
        }
        rows++;
        if (batch_full(r->cols, sizeof(Column), r->ncols)) break;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        free_batch(r);
        return raise_reader_error(r, Error);
    }
    if (rows == 0) {
        free_batch(r);
        Py_RETURN_NONE;
    }
    return batch_take(r->cols, sizeof(Column), r->ncols, rows);
}

static PyObject *Reader_close(Reader *r, PyObject *unused) {
    close_stmt(r);
    r->done = 1;
    Py_RETURN_NONE;
}

static PyObject *Reader_get_done(Reader *r, void *closure) {
    return PyBool_FromLong(r->done);
}

static PyMethodDef Reader_methods[] = {
    {"fetch", (PyCFunction)Reader_fetch, METH_O,
     "fetch(max_rows) -> None at the end, else (rows, [(validity, null_count, values, data)])"},
    {"close", (PyCFunction)Reader_close, METH_NOARGS,
     "Close the statement (an unread rest of the result is drained); idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"done", (getter)Reader_get_done, NULL, "True once the whole result was read", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "delta_platform.source._mysql_binary.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A prepared SELECT streamed over the binary protocol into Arrow buffers.",
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
    .tp_init = (initproc)Reader_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mysql_binary",
    "Binary-protocol MySQL/MariaDB reads into Arrow buffers (see mysql_binary.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__mysql_binary(void) {
    if (PyType_Ready(&ReaderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Error = PyErr_NewException("delta_platform.source._mysql_binary.Error", NULL, NULL);
    Unsupported = PyErr_NewException("delta_platform.source._mysql_binary.Unsupported", Error, NULL);
    Py_INCREF(&ReaderType);
    if (!Error || !Unsupported || PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0 ||
        PyModule_AddObject(m, "Error", Error) < 0 || PyModule_AddObject(m, "Unsupported", Unsupported) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "K_INT8", K_INT8);
    PyModule_AddIntConstant(m, "K_INT16", K_INT16);
    PyModule_AddIntConstant(m, "K_INT32", K_INT32);
    PyModule_AddIntConstant(m, "K_INT64", K_INT64);
    PyModule_AddIntConstant(m, "K_DOUBLE", K_DOUBLE);
    PyModule_AddIntConstant(m, "K_DECIMAL", K_DECIMAL);
    PyModule_AddIntConstant(m, "K_DATE", K_DATE);
    PyModule_AddIntConstant(m, "K_TIMESTAMP", K_TIMESTAMP);
    PyModule_AddIntConstant(m, "K_TEXT", K_TEXT);
    PyModule_AddIntConstant(m, "K_BINARY", K_BINARY);
    return m;
}
