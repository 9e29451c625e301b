/*
 * buf.h - a growable byte buffer, reused across calls so hot paths do not
 * allocate per event (capacity only grows). Header-only.
 */
#ifndef ENGAGE_BUF_H
#define ENGAGE_BUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct engage_buf {
    char *p;
    size_t len;
    size_t cap;
} engage_buf_t;

/** Ensures room for `more` bytes past len. Returns 0, or -1 on OOM. */
static inline int engage_buf_reserve(engage_buf_t *b, size_t more) {
    if (b->len + more <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap * 2 : 256;
    while (ncap < b->len + more)
        ncap *= 2;
    char *np = (char *)realloc(b->p, ncap);
    if (!np)
        return -1;
    b->p = np;
    b->cap = ncap;
    return 0;
}

/** Appends n bytes. Returns 0, or -1 on OOM. */
static inline int engage_buf_append(engage_buf_t *b, const void *d, size_t n) {
    if (engage_buf_reserve(b, n))
        return -1;
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

/** Appends v as 8 little-endian bytes. */
static inline int engage_buf_put_u64(engage_buf_t *b, uint64_t v) {
    unsigned char t[8];
    for (int i = 0; i < 8; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    return engage_buf_append(b, t, 8);
}

/** Appends v as 4 little-endian bytes. */
static inline int engage_buf_put_u32(engage_buf_t *b, uint32_t v) {
    unsigned char t[4];
    for (int i = 0; i < 4; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    return engage_buf_append(b, t, 4);
}

static inline uint64_t engage_get_u64(const void *p) {
    const unsigned char *s = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | s[i];
    return v;
}

static inline uint32_t engage_get_u32(const void *p) {
    const unsigned char *s = (const unsigned char *)p;
    return (uint32_t)s[0] | ((uint32_t)s[1] << 8) | ((uint32_t)s[2] << 16) |
           ((uint32_t)s[3] << 24);
}

/** Empties the buffer, keeping its memory. */
static inline void engage_buf_reset(engage_buf_t *b) { b->len = 0; }

/** Frees the memory; the buffer is empty and reusable afterwards. */
static inline void engage_buf_free(engage_buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

#endif
