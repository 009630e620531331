/*
 * One batch's Arrow buffers per column, shared by the C readers (_mysql_binary.c, _pg_copy.c).
 *
 * A column's buffers are bytes objects Python wraps without a copy (pa.py_buffer, see
 * delta_platform/source/buffers.py): a validity bitmap, the values (fixed-width, bit-packed
 * booleans, or int32 offsets for var-length data) and, for var-length columns, the data bytes
 * (gathered in a malloc'd buffer reused across batches, copied once into bytes at the end).
 * Each reader's column struct starts with an ArrowOut, so a column array is walked as
 * ArrowOut records of the struct's size (`stride`).
 */
#ifndef DELTA_ARROW_OUT_H
#define DELTA_ARROW_OUT_H

#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_BYTES_SOFT (64 * 1024 * 1024)  /* end a batch early once a column holds this much */

typedef struct {
    int width;                 /* bytes per fixed-width value; 0 for var-length or bit-packed */
    int var;                   /* int32 offsets + data */
    int bits;                  /* bit-packed booleans */
    uint8_t *validity;
    char *values;
    char *data;
    size_t data_len, data_cap;
    Py_ssize_t null_count;
    PyObject *validity_obj, *values_obj;
} ArrowOut;

#define ARROW_OUT(cols, stride, i) ((ArrowOut *)((char *)(cols) + (size_t)(i) * (stride)))

/* Drop the batch's bytes objects (kept by Python once handed over). */
static void batch_clear(void *cols, size_t stride, int ncols) {
    for (int i = 0; i < ncols; i++) {
        ArrowOut *o = ARROW_OUT(cols, stride, i);
        Py_CLEAR(o->validity_obj);
        Py_CLEAR(o->values_obj);
        o->validity = NULL;
        o->values = NULL;
    }
}

/* Free a column's data buffer (at the reader's end). */
static void out_release(ArrowOut *o) {
    free(o->data);
    o->data = NULL;
    o->data_cap = o->data_len = 0;
}

/* Buffers for up to max_rows rows in every column. 0 ok, -1 with an exception set. */
static int batch_begin(void *cols, size_t stride, int ncols, Py_ssize_t max_rows) {
    for (int i = 0; i < ncols; i++) {
        ArrowOut *o = ARROW_OUT(cols, stride, i);
        Py_ssize_t vbytes = o->var ? (max_rows + 1) * 4 : o->bits ? (max_rows + 7) / 8 : max_rows * o->width;
        o->validity_obj = PyBytes_FromStringAndSize(NULL, (max_rows + 7) / 8);
        o->values_obj = PyBytes_FromStringAndSize(NULL, vbytes);
        if (!o->validity_obj || !o->values_obj) {
            batch_clear(cols, stride, ncols);
            return -1;
        }
        o->validity = (uint8_t *)PyBytes_AS_STRING(o->validity_obj);
        o->values = PyBytes_AS_STRING(o->values_obj);
        memset(o->validity, 0, (size_t)(max_rows + 7) / 8);
        if (o->bits) memset(o->values, 0, (size_t)vbytes);
        if (o->var) ((int32_t *)o->values)[0] = 0;
        o->data_len = 0;
        o->null_count = 0;
    }
    return 0;
}

/* Whether some column's data passed BATCH_BYTES_SOFT (the batch should end). */
static int batch_full(void *cols, size_t stride, int ncols) {
    for (int i = 0; i < ncols; i++)
        if (ARROW_OUT(cols, stride, i)->data_len > BATCH_BYTES_SOFT) return 1;
    return 0;
}

static void out_valid(ArrowOut *o, Py_ssize_t row) { o->validity[row >> 3] |= (uint8_t)(1u << (row & 7)); }

static void out_null(ArrowOut *o, Py_ssize_t row) {
    o->null_count++;
    if (o->var) ((int32_t *)o->values)[row + 1] = (int32_t)o->data_len;
    else if (o->width) memset(o->values + row * o->width, 0, (size_t)o->width);
}

/* Room for `more` bytes of data. 0 ok, -1 too large for int32 offsets (1) or out of memory (2). */
static int out_reserve(ArrowOut *o, size_t more, int *why) {
    size_t need = o->data_len + more;
    if (need > INT32_MAX) {
        *why = 1;
        return -1;
    }
    if (need <= o->data_cap) return 0;
    size_t cap = o->data_cap ? o->data_cap : 1 << 16;
    while (cap < need) cap *= 2;
    char *p = realloc(o->data, cap);
    if (!p) {
        *why = 2;
        return -1;
    }
    o->data = p;
    o->data_cap = cap;
    return 0;
}

/* The end of a var-length value just written into data (data_len already advanced). */
static void out_end_value(ArrowOut *o, Py_ssize_t row) { ((int32_t *)o->values)[row + 1] = (int32_t)o->data_len; }

/* (rows, [(validity|None, null_count, values, data|None)]) of the batch; clears its buffers. */
static PyObject *batch_take(void *cols, size_t stride, int ncols, Py_ssize_t rows) {
    PyObject *list = PyList_New(ncols);
    if (!list) {
        batch_clear(cols, stride, ncols);
        return NULL;
    }
    for (int i = 0; i < ncols; i++) {
        ArrowOut *o = ARROW_OUT(cols, stride, i);
        PyObject *data;
        if (o->var) {
            data = PyBytes_FromStringAndSize(o->data ? o->data : "", (Py_ssize_t)o->data_len);
            if (!data) {
                Py_DECREF(list);
                batch_clear(cols, stride, ncols);
                return NULL;
            }
        } else {
            data = Py_None;
            Py_INCREF(Py_None);
        }
        PyObject *validity = o->null_count ? o->validity_obj : Py_None;
        PyObject *item = Py_BuildValue("(OnON)", validity, o->null_count, o->values_obj, data);
        if (!item) {
            Py_DECREF(list);
            batch_clear(cols, stride, ncols);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    batch_clear(cols, stride, ncols);
    for (int i = 0; i < ncols; i++) { /* a batch that ended early on bytes: shrink back */
        ArrowOut *o = ARROW_OUT(cols, stride, i);
        if (o->data_cap > 4 * (size_t)BATCH_BYTES_SOFT) out_release(o);
    }
    return Py_BuildValue("(nN)", rows, list);
}

#endif
