/*
 * codec.c - the avro-c adapter: UserAction decoding (with schema resolution),
 * output record encoding, JSON rendering.
 *
 * Three habits of avro-c 1.11.1 shape this file:
 *
 *  1. Its binary reader trusts length prefixes. read_string() mallocs the
 *     declared length before checking that the bytes exist (a 5-byte input can
 *     ask for 1 GiB; under ASan a huge one aborts the process), negative lengths
 *     are not rejected, and bytes left after the datum go unnoticed. So every
 *     input is first walked by our own validator (vnode_*), compiled once from
 *     the writer schema: it checks varints, lengths, union and enum indices and
 *     that the datum ends exactly at the end of the buffer. Only bytes it
 *     accepts reach avro_value_read().
 *
 *  2. Its resolved reader does not implement defaults: a reader field missing
 *     from the writer makes avro_resolved_reader_new() fail, and that failure
 *     path double-frees memoized resolvers (it crashes on the v0 schema). So we
 *     (a) check compatibility ourselves (compat_*) with avro-c's own rules and
 *     call avro_resolved_reader_new() only when it cannot fail, and (b) resolve
 *     against a "projected" reader schema without the reader fields the writer
 *     lacks; those take the reader's default, which we read from the schema
 *     JSON with jansson (avro-c does not keep defaults at all).
 *
 *  3. avro_strerror() can accumulate prefixes across calls (the memory
 *     reader prefixes rather than sets its message). It is cleared before
 *     avro-c calls on cold paths only (construction, JSON); clearing costs a
 *     vsnprintf, too much per record, and validated bytes do not make
 *     avro_value_read() fail anyway.
 *
 * Everything avro-c allocates (schemas, classes, values, reader, writer) is
 * created at construction and released in the destroy functions.
 */
#include "codec.h"

#include <avro.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "schemas_gen.h"
#include "timeutil.h"

#define CONFLUENT_HDR 5
#define MAX_DEPTH 64                  /* nesting limit for walks over data */
#define MAX_ZERO_SIZE_ITEMS (1 << 20) /* array/map items that take no bytes */
#define MAX_SCHEMA_FILE (1 << 20)

static void avro_clear_err(void) { avro_set_error("%s", ""); }

/* ---- validator: a compiled walk over a writer schema -------------------- */

typedef struct vnode vnode_t;
struct vnode {
    avro_type_t type;
    int64_t n;      /* record fields, union branches, enum symbols, fixed size */
    vnode_t **kids; /* fields / branches; [0] = array items or map values */
    avro_schema_t schema;
    int zero_size; /* encodes to 0 bytes (null, empty record...) */
};

typedef struct vprog {
    vnode_t *root;
    vnode_t **all; /* every node, for freeing (the graph may share nodes) */
    size_t n, cap;
} vprog_t;

static vnode_t *vprog_node(vprog_t *vp, avro_schema_t s, avro_type_t t) {
    if (vp->n == vp->cap) {
        size_t ncap = vp->cap ? vp->cap * 2 : 16;
        vnode_t **na = realloc(vp->all, ncap * sizeof(*na));
        if (!na)
            return NULL;
        vp->all = na;
        vp->cap = ncap;
    }
    vnode_t *nd = calloc(1, sizeof(*nd));
    if (!nd)
        return NULL;
    nd->type = t;
    nd->schema = s;
    vp->all[vp->n++] = nd;
    return nd;
}

static void vprog_free(vprog_t *vp) {
    for (size_t i = 0; i < vp->n; i++) {
        free(vp->all[i]->kids);
        free(vp->all[i]);
    }
    free(vp->all);
    memset(vp, 0, sizeof(*vp));
}

/* Named types are compiled once; a link resolves to the same node. */
static vnode_t *vprog_find(vprog_t *vp, avro_schema_t s) {
    for (size_t i = 0; i < vp->n; i++)
        if (vp->all[i]->schema == s)
            return vp->all[i];
    return NULL;
}

static vnode_t *vcompile(vprog_t *vp, avro_schema_t s, int depth) {
    if (depth > MAX_DEPTH)
        return NULL;
    avro_type_t t = avro_typeof(s);
    if (t == AVRO_LINK) {
        avro_schema_t target = avro_schema_link_target(s);
        vnode_t *nd = vprog_find(vp, target);
        return nd ? nd : vcompile(vp, target, depth + 1);
    }
    if (t == AVRO_RECORD || t == AVRO_ENUM || t == AVRO_FIXED) {
        vnode_t *nd = vprog_find(vp, s);
        if (nd)
            return nd;
    }
    vnode_t *nd = vprog_node(vp, s, t);
    if (!nd)
        return NULL;
    switch (t) {
    case AVRO_NULL:
        nd->zero_size = 1;
        break;
    case AVRO_RECORD:
    case AVRO_UNION: {
        size_t n = t == AVRO_RECORD ? avro_schema_record_size(s) : avro_schema_union_size(s);
        nd->n = (int64_t)n;
        nd->kids = calloc(n ? n : 1, sizeof(*nd->kids));
        if (!nd->kids)
            return NULL;
        int zero = 1;
        for (size_t i = 0; i < n; i++) {
            avro_schema_t c = t == AVRO_RECORD
                                  ? avro_schema_record_field_get_by_index(s, (int)i)
                                  : avro_schema_union_branch(s, (int)i);
            if (!c || !(nd->kids[i] = vcompile(vp, c, depth + 1)))
                return NULL;
            if (!nd->kids[i]->zero_size)
                zero = 0;
        }
        nd->zero_size = t == AVRO_RECORD && zero;
        break;
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
        avro_schema_t c = t == AVRO_ARRAY ? avro_schema_array_items(s) : avro_schema_map_values(s);
        nd->n = 1;
        nd->kids = calloc(1, sizeof(*nd->kids));
        if (!nd->kids || !c || !(nd->kids[0] = vcompile(vp, c, depth + 1)))
            return NULL;
        break;
    }
    case AVRO_ENUM:
        nd->n = avro_schema_enum_number_of_symbols(s);
        break;
    case AVRO_FIXED:
        nd->n = avro_schema_fixed_size(s);
        nd->zero_size = nd->n == 0;
        break;
    default:
        break;
    }
    return nd;
}

static int vprog_init(vprog_t *vp, avro_schema_t s) {
    memset(vp, 0, sizeof(*vp));
    vp->root = vcompile(vp, s, 0);
    if (!vp->root) {
        vprog_free(vp);
        return -1;
    }
    return 0;
}

typedef struct vstate {
    const unsigned char *p;
    size_t len, pos;
    int64_t zero_items;
    const char *why;
} vstate_t;

static int v_fail(vstate_t *st, const char *why) {
    st->why = why;
    return -1;
}

/* Zig-zag varint as avro-c reads it: at most 10 bytes. */
static int v_varint(vstate_t *st, int64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (st->pos >= st->len)
            return v_fail(st, "truncated varint");
        unsigned char b = st->p[st->pos++];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = (int64_t)((v >> 1) ^ (~(v & 1) + 1));
            return 0;
        }
    }
    return v_fail(st, "varint longer than 10 bytes");
}

static int v_skip(vstate_t *st, int64_t n, const char *why) {
    if (n < 0 || (uint64_t)n > st->len - st->pos)
        return v_fail(st, why);
    st->pos += (size_t)n;
    return 0;
}

static int v_walk(vstate_t *st, const vnode_t *nd, int depth) {
    int64_t v;
    if (depth > MAX_DEPTH)
        return v_fail(st, "nesting too deep");
    switch (nd->type) {
    case AVRO_NULL:
        return 0;
    case AVRO_BOOLEAN:
        if (st->pos >= st->len)
            return v_fail(st, "truncated boolean");
        if (st->p[st->pos] > 1)
            return v_fail(st, "boolean byte not 0 or 1");
        st->pos++;
        return 0;
    case AVRO_INT32:
        if (v_varint(st, &v))
            return -1;
        if (v < INT32_MIN || v > INT32_MAX)
            return v_fail(st, "int out of range");
        return 0;
    case AVRO_INT64:
        return v_varint(st, &v);
    case AVRO_FLOAT:
        return v_skip(st, 4, "truncated float");
    case AVRO_DOUBLE:
        return v_skip(st, 8, "truncated double");
    case AVRO_STRING:
    case AVRO_BYTES:
        if (v_varint(st, &v))
            return -1;
        if (v < 0)
            return v_fail(st, "negative length");
        return v_skip(st, v, "length exceeds the remaining bytes");
    case AVRO_FIXED:
        return v_skip(st, nd->n, "truncated fixed");
    case AVRO_ENUM:
        if (v_varint(st, &v))
            return -1;
        if (v < 0 || v >= nd->n)
            return v_fail(st, "enum index out of range");
        return 0;
    case AVRO_RECORD:
        for (int64_t i = 0; i < nd->n; i++)
            if (v_walk(st, nd->kids[i], depth + 1))
                return -1;
        return 0;
    case AVRO_UNION:
        if (v_varint(st, &v))
            return -1;
        if (v < 0 || v >= nd->n)
            return v_fail(st, "union index out of range");
        return v_walk(st, nd->kids[v], depth + 1);
    case AVRO_ARRAY:
    case AVRO_MAP:
        for (;;) {
            int64_t count;
            if (v_varint(st, &count))
                return -1;
            if (count == 0)
                return 0;
            if (count < 0) {
                int64_t bsize;
                if (count == INT64_MIN)
                    return v_fail(st, "bad block count");
                count = -count;
                if (v_varint(st, &bsize))
                    return -1;
                if (bsize < 0)
                    return v_fail(st, "negative block size");
            }
            /* Each item takes at least one byte unless it is zero-sized,
             * so the loop is bounded by the input; zero-sized ones get a
             * fixed budget (avro-c would allocate for each). */
            int zero = nd->type == AVRO_ARRAY && nd->kids[0]->zero_size;
            if (zero) {
                st->zero_items += count;
                if (count > MAX_ZERO_SIZE_ITEMS || st->zero_items > MAX_ZERO_SIZE_ITEMS)
                    return v_fail(st, "too many zero-size items");
            } else if ((uint64_t)count > st->len - st->pos) {
                return v_fail(st, "block count exceeds the remaining bytes");
            }
            for (int64_t i = 0; i < count; i++) {
                if (nd->type == AVRO_MAP) {
                    if (v_varint(st, &v))
                        return -1;
                    if (v < 0)
                        return v_fail(st, "negative map key length");
                    if (v_skip(st, v, "map key exceeds the remaining bytes"))
                        return -1;
                }
                if (v_walk(st, nd->kids[0], depth + 1))
                    return -1;
            }
        }
    default:
        return v_fail(st, "unsupported schema type");
    }
}

/* Returns 0 if buf[0..len) is exactly one datum of the program's schema. */
static int vprog_check(const vprog_t *vp, const void *buf, size_t len, const char **why) {
    vstate_t st = {.p = buf, .len = len};
    if (v_walk(&st, vp->root, 0)) {
        *why = st.why;
        return -1;
    }
    if (st.pos != len) {
        *why = "trailing bytes after the datum";
        return -1;
    }
    return 0;
}

/* ---- compatibility check mirroring avro-c's resolved reader ------------- */

/* avro_resolved_reader_new() can crash on its own failure path (a record
 * whose fields partly resolved frees shared resolvers twice), so it is only
 * called when this check returns C_OK. C_FAIL marks failures that avro-c
 * reports without touching allocated resolvers (type or name mismatch at the
 * top of a try_*), C_DANGER everything else. */
enum { C_OK = 0, C_FAIL = 1, C_DANGER = 2 };

static avro_schema_t unlink_schema(avro_schema_t s) {
    for (int i = 0; i < 32 && avro_typeof(s) == AVRO_LINK; i++)
        s = avro_schema_link_target(s);
    return s;
}

static int compat(avro_schema_t w, avro_schema_t r, int depth, char *why, size_t why_size) {
    if (depth > 32) {
        snprintf(why, why_size, "schemas nest too deeply");
        return C_DANGER;
    }
    w = unlink_schema(w);
    r = unlink_schema(r);
    avro_type_t wt = avro_typeof(w), rt = avro_typeof(r);
    if (wt == AVRO_UNION) {
        size_t n = avro_schema_union_size(w), ok = 0;
        for (size_t i = 0; i < n; i++) {
            int c = compat(avro_schema_union_branch(w, (int)i), r, depth + 1, why, why_size);
            if (c == C_DANGER)
                return C_DANGER;
            ok += c == C_OK;
        }
        if (!ok)
            snprintf(why, why_size, "no branch of the writer union fits reader %s",
                     avro_schema_type_name(r));
        return ok ? C_OK : C_FAIL;
    }
    switch (rt) {
    case AVRO_UNION: {
        size_t n = avro_schema_union_size(r);
        for (size_t i = 0; i < n; i++) {
            int c = compat(w, avro_schema_union_branch(r, (int)i), depth + 1, why, why_size);
            if (c != C_FAIL)
                return c; /* first fitting branch wins, as in avro-c */
        }
        snprintf(why, why_size, "writer %s fits no branch of the reader union",
                 avro_schema_type_name(w));
        return C_FAIL;
    }
    case AVRO_BOOLEAN:
    case AVRO_BYTES:
    case AVRO_INT32:
    case AVRO_NULL:
    case AVRO_STRING:
        if (wt == rt)
            return C_OK;
        break;
    case AVRO_INT64:
        if (wt == AVRO_INT64 || wt == AVRO_INT32)
            return C_OK;
        break;
    case AVRO_FLOAT:
        if (wt == AVRO_FLOAT || wt == AVRO_INT32 || wt == AVRO_INT64)
            return C_OK;
        break;
    case AVRO_DOUBLE:
        if (wt == AVRO_DOUBLE || wt == AVRO_FLOAT || wt == AVRO_INT32 || wt == AVRO_INT64)
            return C_OK;
        break;
    case AVRO_RECORD: {
        if (wt != AVRO_RECORD || strcmp(avro_schema_name(w), avro_schema_name(r)) != 0)
            break;
        size_t n = avro_schema_record_size(r);
        for (size_t i = 0; i < n; i++) {
            const char *name = avro_schema_record_field_name(r, (int)i);
            int wi = avro_schema_record_field_get_index(w, name);
            if (wi < 0) {
                snprintf(why, why_size, "reader field %s.%s is missing from the writer",
                         avro_schema_name(r), name);
                return C_DANGER;
            }
            char sub[200];
            if (compat(avro_schema_record_field_get_by_index(w, wi),
                       avro_schema_record_field_get_by_index(r, (int)i), depth + 1, sub,
                       sizeof(sub)) != C_OK) {
                snprintf(why, why_size, "field %s: %s", name, sub);
                return C_DANGER;
            }
        }
        return C_OK;
    }
    default:
        /* arrays, maps, enums, fixed: identical schemas only (engage's
         * schemas have none; keeps us off avro-c's less-trodden paths) */
        if (avro_schema_equal(w, r))
            return C_OK;
        snprintf(why, why_size, "%s types differ", avro_schema_type_name(r));
        return C_DANGER;
    }
    snprintf(why, why_size, "writer %s does not fit reader %s", avro_schema_type_name(w),
             avro_schema_type_name(r));
    return C_FAIL;
}

/* ---- helpers ------------------------------------------------------------- */

static int32_t get_be32(const unsigned char *p) {
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                     (uint32_t)p[3]);
}

static void put_be32(unsigned char *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    p[0] = (unsigned char)(u >> 24);
    p[1] = (unsigned char)(u >> 16);
    p[2] = (unsigned char)(u >> 8);
    p[3] = (unsigned char)u;
}

/* "builtin" names the compiled-in schemas/user_action.avsc, so a packaged
 * binary runs with its defaults from any working directory. */
static char *read_file(const char *path, size_t *len, char *errstr, size_t errstr_size) {
    if (strcmp(path, "builtin") == 0) {
        char *b = strdup(ENGAGE_SCHEMA_USER_ACTION);
        if (!b)
            engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        else
            *len = strlen(b);
        return b;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "cannot open schema %s: %s", path,
                      strerror(errno));
        return NULL;
    }
    char *b = malloc(MAX_SCHEMA_FILE + 1);
    size_t n = b ? fread(b, 1, MAX_SCHEMA_FILE + 1, f) : 0;
    int bad = !b || ferror(f) || n > MAX_SCHEMA_FILE;
    fclose(f);
    if (bad) {
        free(b);
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "cannot read schema %s%s", path,
                      n > MAX_SCHEMA_FILE ? ": file too large" : "");
        return NULL;
    }
    b[n] = '\0';
    *len = n;
    return b;
}

/* Parses schema text with avro-c (for values) and jansson (for defaults). */
static int parse_schema(const char *text, size_t len, const char *what, avro_schema_t *schema,
                        json_t **json, char *errstr, size_t errstr_size) {
    json_error_t jerr;
    avro_clear_err();
    if (avro_schema_from_json_length(text, len, schema)) {
        *schema = NULL;
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "schema %s: %s", what,
                      avro_strerror());
        return -1;
    }
    *json = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(*json) || !json_is_array(json_object_get(*json, "fields")) ||
        avro_typeof(*schema) != AVRO_RECORD ||
        json_array_size(json_object_get(*json, "fields")) != avro_schema_record_size(*schema)) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "schema %s: not a record schema",
                      what);
        avro_schema_decref(*schema);
        json_decref(*json);
        *schema = NULL;
        *json = NULL;
        return -1;
    }
    return 0;
}

/* Returns the union's null branch index, or -1. */
static int union_null_branch(avro_schema_t u) {
    size_t n = avro_schema_union_size(u);
    for (size_t i = 0; i < n; i++)
        if (avro_typeof(avro_schema_union_branch(u, (int)i)) == AVRO_NULL)
            return (int)i;
    return -1;
}

/* ---- JSON rendering ------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (as jansson judges validity: no
 * overlongs, surrogates or code points past U+10FFFF), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t k;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        k = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

/* A JSON string for arbitrary bytes: valid UTF-8 as is (NULs included),
 * each byte of an invalid sequence replaced by U+FFFD. */
static json_t *json_string_safe(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    if (n > (SIZE_MAX - 1) / 3)
        return NULL;
    char *t = malloc(n * 3 + 1);
    if (!t)
        return NULL;
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        if (k) {
            memcpy(t + o, u + i, k);
            o += k;
            i += k;
        } else {
            memcpy(t + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(t, o);
    free(t);
    return j;
}

/* Avro's JSON encoding of bytes/fixed: one code point U+0000..U+00FF each. */
static json_t *json_bytes(const void *buf, size_t n) {
    const unsigned char *b = buf;
    if (n > (SIZE_MAX - 1) / 2)
        return NULL;
    char *t = malloc(n * 2 + 1);
    if (!t)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] < 0x80) {
            t[o++] = (char)b[i];
        } else {
            t[o++] = (char)(0xc0 | (b[i] >> 6));
            t[o++] = (char)(0x80 | (b[i] & 0x3f));
        }
    }
    json_t *j = json_stringn(t, o);
    free(t);
    return j;
}

static json_t *render(avro_value_t *v, int depth);

static json_t *render_record(avro_value_t *v, int depth) {
    avro_schema_t s = avro_value_get_schema(v);
    size_t n = 0;
    json_t *o = json_object();
    if (!o || avro_value_get_size(v, &n))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        avro_value_t f;
        if (avro_value_get_by_index(v, i, &f, NULL))
            goto fail;
        json_t *c = render(&f, depth + 1);
        if (!c || json_object_set_new(o, avro_schema_record_field_name(s, (int)i), c))
            goto fail;
    }
    return o;
fail:
    json_decref(o);
    return NULL;
}

static json_t *render(avro_value_t *v, int depth) {
    if (depth > MAX_DEPTH)
        return NULL;
    switch (avro_value_get_type(v)) {
    case AVRO_NULL:
        return json_null();
    case AVRO_BOOLEAN: {
        int b;
        return avro_value_get_boolean(v, &b) ? NULL : json_boolean(b);
    }
    case AVRO_INT32: {
        int32_t i;
        return avro_value_get_int(v, &i) ? NULL : json_integer(i);
    }
    case AVRO_INT64: {
        int64_t l;
        return avro_value_get_long(v, &l) ? NULL : json_integer(l);
    }
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        double d;
        float f;
        if (avro_value_get_type(v) == AVRO_FLOAT) {
            if (avro_value_get_float(v, &f))
                return NULL;
            d = f;
        } else if (avro_value_get_double(v, &d)) {
            return NULL;
        }
        return isfinite(d) ? json_real(d) : json_null(); /* JSON has no NaN/inf */
    }
    case AVRO_STRING: {
        const char *s;
        size_t n;
        if (avro_value_get_string(v, &s, &n))
            return NULL;
        return json_string_safe(s ? s : "", n ? n - 1 : 0);
    }
    case AVRO_BYTES:
    case AVRO_FIXED: {
        const void *b;
        size_t n;
        int rc = avro_value_get_type(v) == AVRO_BYTES ? avro_value_get_bytes(v, &b, &n)
                                                       : avro_value_get_fixed(v, &b, &n);
        return rc ? NULL : json_bytes(b, n);
    }
    case AVRO_ENUM: {
        int e;
        if (avro_value_get_enum(v, &e))
            return NULL;
        const char *sym = avro_schema_enum_get(avro_value_get_schema(v), e);
        return sym ? json_string(sym) : NULL;
    }
    case AVRO_RECORD:
        return render_record(v, depth);
    case AVRO_UNION: {
        avro_value_t br;
        if (avro_value_get_current_branch(v, &br))
            return NULL;
        return render(&br, depth + 1);
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
        int is_map = avro_value_get_type(v) == AVRO_MAP;
        size_t n;
        json_t *out = is_map ? json_object() : json_array();
        if (!out || avro_value_get_size(v, &n))
            goto fail;
        for (size_t i = 0; i < n; i++) {
            avro_value_t c;
            const char *key = NULL;
            if (avro_value_get_by_index(v, i, &c, &key))
                goto fail;
            json_t *jc = render(&c, depth + 1);
            if (!jc)
                goto fail;
            if (is_map ? json_object_set_new(out, key ? key : "", jc)
                       : json_array_append_new(out, jc))
                goto fail;
        }
        return out;
    fail:
        json_decref(out);
        return NULL;
    }
    default:
        return NULL;
    }
}

static engage_err_t dump_json(json_t *j, char **json, char *errstr, size_t errstr_size) {
    *json = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17))
              : NULL;
    json_decref(j);
    if (!*json)
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "cannot render JSON");
    return ENGAGE_ERR_OK;
}

/* ---- JSON -> Avro value (engage produce) -------------------------------- */

static int json_fits(avro_schema_t s, json_t *j);

static int set_from_json(avro_value_t *v, json_t *j, int depth, char *err, size_t err_size);

/* Which union branch takes JSON value j: a {"type": value} wrapper naming a
 * branch, else the first branch whose type accepts j. */
static int pick_branch(avro_schema_t u, json_t **j) {
    size_t n = avro_schema_union_size(u);
    if (json_is_object(*j) && json_object_size(*j) == 1) {
        const char *key = json_object_iter_key(json_object_iter(*j));
        for (size_t i = 0; i < n; i++) {
            avro_schema_t b = avro_schema_union_branch(u, (int)i);
            const char *bn = avro_schema_type_name(b);
            if (key && bn && strcmp(key, bn) == 0) {
                *j = json_object_iter_value(json_object_iter(*j));
                return (int)i;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (json_fits(avro_schema_union_branch(u, (int)i), *j))
            return (int)i;
    return -1;
}

static int json_fits(avro_schema_t s, json_t *j) {
    s = unlink_schema(s);
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        return json_is_null(j);
    case AVRO_BOOLEAN:
        return json_is_boolean(j);
    case AVRO_INT32:
        return json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
               json_integer_value(j) <= INT32_MAX;
    case AVRO_INT64:
        return json_is_integer(j);
    case AVRO_FLOAT:
    case AVRO_DOUBLE:
        return json_is_number(j);
    case AVRO_STRING:
    case AVRO_BYTES:
    case AVRO_FIXED:
        return json_is_string(j);
    case AVRO_ENUM:
        return json_is_string(j) && avro_schema_enum_get_by_name(s, json_string_value(j)) >= 0;
    case AVRO_RECORD:
    case AVRO_MAP:
        return json_is_object(j);
    case AVRO_ARRAY:
        return json_is_array(j);
    default:
        return 0;
    }
}

/* Inverse of json_bytes(): code points above U+00FF are an error. */
static int json_to_bytes(json_t *j, engage_buf_t *out) {
    const unsigned char *s = (const unsigned char *)json_string_value(j);
    size_t n = json_string_length(j);
    out->len = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c;
        if (s[i] < 0x80) {
            c = s[i++];
        } else if ((s[i] == 0xc2 || s[i] == 0xc3) && i + 1 < n) {
            c = (unsigned char)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3f));
            i += 2;
        } else {
            return -1;
        }
        if (engage_buf_append(out, &c, 1))
            return -1;
    }
    return 0;
}

static int set_from_json(avro_value_t *v, json_t *j, int depth, char *err, size_t err_size) {
    avro_schema_t s = avro_value_get_schema(v);
    avro_type_t t = avro_value_get_type(v);
    if (depth > MAX_DEPTH) {
        snprintf(err, err_size, "nesting too deep");
        return -1;
    }
    if (t == AVRO_UNION) {
        int b = pick_branch(s, &j);
        avro_value_t br;
        if (b < 0) {
            snprintf(err, err_size, "value fits no branch of the union");
            return -1;
        }
        if (avro_value_set_branch(v, b, &br))
            goto avro_fail;
        return set_from_json(&br, j, depth + 1, err, err_size);
    }
    if (!json_fits(s, j)) {
        snprintf(err, err_size, "expected %s", avro_schema_type_name(s));
        return -1;
    }
    switch (t) {
    case AVRO_NULL:
        return avro_value_set_null(v) ? -1 : 0;
    case AVRO_BOOLEAN:
        return avro_value_set_boolean(v, json_is_true(j)) ? -1 : 0;
    case AVRO_INT32:
        return avro_value_set_int(v, (int32_t)json_integer_value(j)) ? -1 : 0;
    case AVRO_INT64:
        return avro_value_set_long(v, (int64_t)json_integer_value(j)) ? -1 : 0;
    case AVRO_FLOAT:
        return avro_value_set_float(v, (float)json_number_value(j)) ? -1 : 0;
    case AVRO_DOUBLE:
        return avro_value_set_double(v, json_number_value(j)) ? -1 : 0;
    case AVRO_STRING:
        /* jansson strings are NUL-terminated; size includes the NUL */
        return avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1)
                   ? -1
                   : 0;
    case AVRO_ENUM:
        return avro_value_set_enum(v, avro_schema_enum_get_by_name(s, json_string_value(j)))
                   ? -1
                   : 0;
    case AVRO_BYTES:
    case AVRO_FIXED: {
        engage_buf_t b = {0};
        int rc = json_to_bytes(j, &b);
        if (rc == 0 && t == AVRO_FIXED && (int64_t)b.len != avro_schema_fixed_size(s))
            rc = -1;
        if (rc == 0)
            rc = t == AVRO_BYTES ? avro_value_set_bytes(v, b.p ? b.p : "", b.len)
                                 : avro_value_set_fixed(v, b.p ? b.p : "", b.len);
        engage_buf_free(&b);
        if (rc)
            snprintf(err, err_size, "bad %s value", avro_schema_type_name(s));
        return rc ? -1 : 0;
    }
    case AVRO_RECORD: {
        size_t n = avro_schema_record_size(s);
        for (size_t i = 0; i < n; i++) {
            const char *name = avro_schema_record_field_name(s, (int)i);
            avro_value_t f;
            if (avro_value_get_by_index(v, i, &f, NULL))
                goto avro_fail;
            json_t *m = json_object_get(j, name);
            json_t *nul = NULL;
            if (!m) {
                /* nested records: avro-c keeps no defaults; nullable -> null */
                if (avro_value_get_type(&f) != AVRO_UNION ||
                    union_null_branch(avro_value_get_schema(&f)) < 0) {
                    snprintf(err, err_size, "missing field %s", name);
                    return -1;
                }
                m = nul = json_null();
            }
            int rc = set_from_json(&f, m, depth + 1, err, err_size);
            json_decref(nul);
            if (rc)
                return -1;
        }
        return 0;
    }
    case AVRO_ARRAY: {
        size_t i;
        json_t *e;
        json_array_foreach(j, i, e) {
            avro_value_t c;
            if (avro_value_append(v, &c, NULL))
                goto avro_fail;
            if (set_from_json(&c, e, depth + 1, err, err_size))
                return -1;
        }
        return 0;
    }
    case AVRO_MAP: {
        const char *k;
        json_t *e;
        json_object_foreach(j, k, e) {
            avro_value_t c;
            if (avro_value_add(v, k, &c, NULL, NULL))
                goto avro_fail;
            if (set_from_json(&c, e, depth + 1, err, err_size))
                return -1;
        }
        return 0;
    }
    default:
        snprintf(err, err_size, "unsupported type %s", avro_schema_type_name(s));
        return -1;
    }
avro_fail:
    snprintf(err, err_size, "avro: %s", avro_strerror());
    return -1;
}

/* ---- decoder --------------------------------------------------------------- */

/* Fields of engage_action_t, by reader-schema name. */
enum { S_EVENT_ID, S_USER_ID, S_TS, S_ACTION, S_PLATFORM, S_APP_VERSION, S__COUNT };
static const char *const slot_names[S__COUNT] = {"event_id", "user_id",  "timestamp",
                                                 "action",   "platform", "app_version"};

typedef struct slot_default {
    int present; /* the projected reader lacks this field: use the default */
    int is_null;
    char *str;
    size_t str_len;
    int64_t num;
} slot_default_t;

/* Field shapes the zero-copy path decodes (see fast_compile()). */
enum { F_STR, F_LONG, F_OPT_STR };

typedef struct writer_ent {
    int32_t id;
    avro_schema_t wschema;    /* writer, from the file */
    json_t *wjson;            /* writer schema JSON: field defaults for encoding */
    avro_schema_t rschema;    /* reader projected onto the writer's fields */
    avro_value_iface_t *wcls; /* generic class of the writer */
    avro_value_iface_t *rcls; /* resolved reader writer -> projected reader */
    avro_value_t wval;        /* decoded datum (writer shape) */
    avro_value_t rval;        /* reader view over wval */
    avro_value_t encval;      /* encode_action_json's value, kept apart from wval */
    int has_encval;
    vprog_t prog;                   /* validator for the writer schema */
    int slot_of[S__COUNT + 8];      /* projected reader index -> slot or -1 */
    size_t nrfields;                /* fields in the projected reader */
    slot_default_t defaults[S__COUNT];
    int fast;                       /* writer == reader: the zero-copy path applies */
    uint8_t null_branch[S__COUNT];  /* for it: union index of null, nullable slots */
} writer_ent_t;

struct engage_decoder {
    int confluent;
    int fast_on; /* use the zero-copy path where it applies (default 1) */
    writer_ent_t *ents;
    size_t nents;
    avro_reader_t reader;
    json_t *rjson;         /* reader schema JSON (compiled in) */
    avro_schema_t rschema; /* full reader schema */
};

static void ent_free(writer_ent_t *e) {
    if (e->has_encval)
        avro_value_decref(&e->encval);
    if (e->rval.self)
        avro_value_decref(&e->rval);
    if (e->wval.self)
        avro_value_decref(&e->wval);
    if (e->rcls)
        avro_value_iface_decref(e->rcls);
    if (e->wcls)
        avro_value_iface_decref(e->wcls);
    if (e->rschema)
        avro_schema_decref(e->rschema);
    if (e->wschema)
        avro_schema_decref(e->wschema);
    json_decref(e->wjson);
    vprog_free(&e->prog);
    for (int i = 0; i < S__COUNT; i++)
        free(e->defaults[i].str);
}

void engage_decoder_destroy(engage_decoder_t *dec) {
    if (!dec)
        return;
    for (size_t i = 0; i < dec->nents; i++)
        ent_free(&dec->ents[i]);
    free(dec->ents);
    if (dec->reader)
        avro_reader_free(dec->reader);
    if (dec->rschema)
        avro_schema_decref(dec->rschema);
    json_decref(dec->rjson);
    free(dec);
}

static int slot_of_name(const char *name) {
    for (int s = 0; s < S__COUNT; s++)
        if (strcmp(slot_names[s], name) == 0)
            return s;
    return -1;
}

/* Checks that the compiled-in reader schema has the shapes decode expects. */
static int check_reader(avro_schema_t r, char *errstr, size_t errstr_size) {
    for (int s = 0; s < S__COUNT; s++) {
        avro_schema_t f = avro_schema_record_field_get(r, slot_names[s]);
        avro_type_t t = f ? avro_typeof(f) : AVRO_NULL;
        int ok;
        if (s == S_TS)
            ok = f && (t == AVRO_INT64 || t == AVRO_INT32);
        else if (s == S_PLATFORM || s == S_APP_VERSION)
            ok = f && (t == AVRO_STRING ||
                       (t == AVRO_UNION && avro_schema_union_size(f) == 2 &&
                        union_null_branch(f) >= 0 &&
                        avro_typeof(avro_schema_union_branch(f, 1 - union_null_branch(f))) ==
                            AVRO_STRING));
        else
            ok = f && t == AVRO_STRING;
        if (!ok) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                          "compiled-in reader schema: field %s missing or of an unexpected type",
                          slot_names[s]);
            return -1;
        }
    }
    return 0;
}

/* Builds e's projected reader, checks and creates the resolution. */
static int ent_resolve(engage_decoder_t *dec, writer_ent_t *e, const char *what, char *errstr,
                       size_t errstr_size) {
    json_t *proj = json_deep_copy(dec->rjson);
    json_t *pf = json_array();
    char why[256] = "";
    int rc = -1;
    if (!proj || !pf) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        goto out;
    }
    json_t *f;
    size_t i;
    json_array_foreach(json_object_get(dec->rjson, "fields"), i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        if (!name)
            goto bad_reader;
        if (avro_schema_record_field_get_index(e->wschema, name) >= 0) {
            json_array_append(pf, f);
            continue;
        }
        json_t *def = json_object_get(f, "default");
        if (!def) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                          "schema %s is not compatible with the reader: it lacks field %s, "
                          "which has no default",
                          what, name);
            goto out;
        }
        int s = slot_of_name(name);
        if (s < 0)
            continue; /* a reader field engage does not use */
        slot_default_t *d = &e->defaults[s];
        d->present = 1;
        if (json_is_null(def) && (s == S_PLATFORM || s == S_APP_VERSION)) {
            d->is_null = 1;
        } else if (json_is_string(def) && s != S_TS) {
            d->str_len = json_string_length(def);
            d->str = malloc(d->str_len + 1);
            if (!d->str) {
                engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto out;
            }
            memcpy(d->str, json_string_value(def), d->str_len + 1);
        } else if (json_is_integer(def) && s == S_TS) {
            d->num = json_integer_value(def);
        } else {
            goto bad_reader;
        }
    }
    if (json_object_set(proj, "fields", pf))
        goto bad_reader;
    char *text = json_dumps(proj, JSON_COMPACT);
    if (!text) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        goto out;
    }
    avro_clear_err();
    int prc = avro_schema_from_json_length(text, strlen(text), &e->rschema);
    free(text);
    if (prc) {
        e->rschema = NULL;
        goto bad_reader;
    }
    e->nrfields = avro_schema_record_size(e->rschema);
    if (e->nrfields > sizeof(e->slot_of) / sizeof(e->slot_of[0]))
        goto bad_reader;
    for (size_t k = 0; k < e->nrfields; k++)
        e->slot_of[k] = slot_of_name(avro_schema_record_field_name(e->rschema, (int)k));

    if (compat(e->wschema, e->rschema, 0, why, sizeof(why)) != C_OK) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                      "schema %s is not compatible with the reader: %s", what, why);
        goto out;
    }
    avro_clear_err();
    e->rcls = avro_resolved_reader_new(e->wschema, e->rschema);
    if (!e->rcls) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                      "schema %s is not compatible with the reader: %s", what, avro_strerror());
        goto out;
    }
    e->wcls = avro_generic_class_from_schema(e->wschema);
    if (!e->wcls || avro_generic_value_new(e->wcls, &e->wval) ||
        avro_resolved_reader_new_value(e->rcls, &e->rval)) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "schema %s: %s", what,
                      avro_strerror());
        goto out;
    }
    avro_resolved_reader_set_source(&e->rval, &e->wval);
    if (vprog_init(&e->prog, e->wschema)) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "schema %s: too deep or no memory",
                      what);
        goto out;
    }
    rc = 0;
    goto out;
bad_reader:
    engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                  "schema %s: cannot build the projected reader schema", what);
out:
    json_decref(pf);
    json_decref(proj);
    return rc;
}

/* ---- zero-copy path -------------------------------------------------------- */

/*
 * When a writer schema is field for field the reader schema (same names in
 * the same order, same types: the common case, schema id 1 =
 * schemas/user_action.avsc), resolution is the identity and avro-c's reader
 * only costs time: it copies every string into its own malloc'd buffer.
 * fast_decode() instead walks the bytes once, doing exactly the checks of
 * the validator (v_walk) for this schema, in the same order and with the
 * same messages, and points the string views into the caller's buffer.
 * tests/unit/test_codec.c checks it against the avro-c path record for
 * record, on valid and mutated inputs.
 */

/* Returns the op for a writer field whose reader counterpart has the same
 * type, or -1. *null_branch is set for nullable strings. */
static int fast_op(avro_schema_t w, avro_schema_t r, int slot, uint8_t *null_branch) {
    w = unlink_schema(w);
    r = unlink_schema(r);
    avro_type_t wt = avro_typeof(w), rt = avro_typeof(r);
    if (wt != rt)
        return -1;
    if (wt == AVRO_INT64)
        return slot == S_TS ? F_LONG : -1;
    if (slot == S_TS)
        return -1;
    if (wt == AVRO_STRING)
        return F_STR;
    if (wt != AVRO_UNION || avro_schema_union_size(w) != 2 || avro_schema_union_size(r) != 2)
        return -1;
    int nb = union_null_branch(w);
    if (nb < 0 || nb != union_null_branch(r) ||
        avro_typeof(unlink_schema(avro_schema_union_branch(w, 1 - nb))) != AVRO_STRING ||
        avro_typeof(unlink_schema(avro_schema_union_branch(r, 1 - nb))) != AVRO_STRING)
        return -1;
    *null_branch = (uint8_t)nb;
    return F_OPT_STR;
}

/* Sets e->fast if e's writer schema is the reader's, field for field, with
 * the fields in slot order and of the shapes fast_decode() reads. */
static void fast_compile(const engage_decoder_t *dec, writer_ent_t *e) {
    size_t n = avro_schema_record_size(e->wschema);
    e->fast = 0;
    if (n != S__COUNT || avro_schema_record_size(dec->rschema) != n ||
        strcmp(avro_schema_name(e->wschema), avro_schema_name(dec->rschema)) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        const char *wn = avro_schema_record_field_name(e->wschema, (int)i);
        const char *rn = avro_schema_record_field_name(dec->rschema, (int)i);
        int slot = wn ? slot_of_name(wn) : -1;
        uint8_t nb = 0;
        /* fast_decode() is written for the fields in slot order */
        if (slot != (int)i || !rn || strcmp(wn, rn) != 0)
            return;
        int op = fast_op(avro_schema_record_field_get_by_index(e->wschema, (int)i),
                         avro_schema_record_field_get_by_index(dec->rschema, (int)i), slot,
                         &nb);
        int want = slot == S_TS ? F_LONG
                   : slot == S_PLATFORM || slot == S_APP_VERSION ? F_OPT_STR
                                                                 : F_STR;
        if (op != want)
            return;
        e->null_branch[slot] = nb;
    }
    e->fast = 1;
}

/* Reads a varint as v_varint() does (at most 10 bytes), leaving the
 * zig-zag value in *z: returns the byte after it, or NULL with *why. The
 * callers decode z themselves (odd = negative), which keeps every value in
 * a register. */
static inline const unsigned char *fast_varint(const unsigned char *p, const unsigned char *end,
                                               uint64_t *z, const char **why) {
    if (p < end && !(*p & 0x80)) { /* one byte: lengths, union indices */
        *z = *p;
        return p + 1;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (end - p >= 8) { /* up to 8 bytes (timestamps take 6) without a loop */
        uint64_t x, stop;
        memcpy(&x, p, 8);
        stop = ~x & 0x8080808080808080ULL;
        if (stop) {
            unsigned nbits = (unsigned)__builtin_ctzll(stop) + 1; /* through the last byte */
            if (nbits < 64)
                x &= (1ULL << nbits) - 1;
            /* drop the continuation bits: 7-bit groups -> 14 -> 28 -> 56 */
            x = ((x & 0x7f007f007f007f00ULL) >> 1) | (x & 0x007f007f007f007fULL);
            x = ((x & 0x3fff00003fff0000ULL) >> 2) | (x & 0x00003fff00003fffULL);
            x = ((x & 0x0fffffff00000000ULL) >> 4) | (x & 0x000000000fffffffULL);
            *z = x;
            return p + nbits / 8;
        }
    }
#endif
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) {
            *why = "truncated varint";
            return NULL;
        }
        unsigned char b = *p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *z = v;
            return p;
        }
    }
    *why = "varint longer than 10 bytes";
    return NULL;
}

/* A string: its view into the buffer. Returns the byte after it or NULL. */
static inline const unsigned char *fast_string(const unsigned char *p, const unsigned char *end,
                                               const char **s, size_t *n, const char **why) {
    uint64_t z;
    if (!(p = fast_varint(p, end, &z, why)))
        return NULL;
    if (z & 1) {
        *why = "negative length";
        return NULL;
    }
    z >>= 1;
    if (z > (uint64_t)(end - p)) {
        *why = "length exceeds the remaining bytes";
        return NULL;
    }
    *s = (const char *)p;
    *n = (size_t)z;
    return p + z;
}

/* A nullable string; *s = NULL and *n = 0 for the null branch. */
static inline const unsigned char *fast_opt_string(const unsigned char *p,
                                                   const unsigned char *end,
                                                   uint64_t null_branch, const char **s,
                                                   size_t *n, const char **why) {
    uint64_t z;
    if (!(p = fast_varint(p, end, &z, why)))
        return NULL;
    if (z != 0 && z != 2) { /* zig-zag of 0 and 1 */
        *why = "union index out of range";
        return NULL;
    }
    *s = NULL;
    *n = 0;
    return z >> 1 == null_branch ? p : fast_string(p, end, s, n, why);
}

/* Decodes the datum p[0..len) of a writer with e->fast set (its fields are
 * the slots in slot order, see fast_compile()); no allocation. */
static engage_err_t fast_decode(const writer_ent_t *e, const unsigned char *p, size_t len,
                                engage_action_t *out, char *errstr, size_t errstr_size) {
    const unsigned char *end = p + len;
    const char *why = NULL, *eid = NULL, *uid = NULL, *act = NULL, *plat, *ver;
    size_t eidn = 0, uidn = 0, actn = 0, platn, vern;
    uint64_t ts = 0;
    if (!(p = fast_string(p, end, &eid, &eidn, &why)) ||
        !(p = fast_string(p, end, &uid, &uidn, &why)) || !(p = fast_varint(p, end, &ts, &why)) ||
        !(p = fast_string(p, end, &act, &actn, &why)) ||
        !(p = fast_opt_string(p, end, e->null_branch[S_PLATFORM], &plat, &platn, &why)) ||
        !(p = fast_opt_string(p, end, e->null_branch[S_APP_VERSION], &ver, &vern, &why))) {
        memset(out, 0, sizeof(*out));
        return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size, "%s", why);
    }
    if (p != end) {
        memset(out, 0, sizeof(*out));
        return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size,
                             "trailing bytes after the datum");
    }
    out->event_id = eid;
    out->event_id_len = eidn;
    out->user_id = uid;
    out->user_id_len = uidn;
    out->ts_ms = (int64_t)((ts >> 1) ^ (~(ts & 1) + 1));
    out->action = act;
    out->action_len = actn;
    out->platform = plat;
    out->platform_len = platn;
    out->app_version = ver;
    out->app_version_len = vern;
    return ENGAGE_ERR_OK;
}

static int ent_load(engage_decoder_t *dec, writer_ent_t *e, int32_t id, const char *path,
                    char *errstr, size_t errstr_size) {
    size_t len;
    char what[512];
    snprintf(what, sizeof(what), "%s (id %" PRId32 ")", path, id);
    e->id = id;
    char *text = read_file(path, &len, errstr, errstr_size);
    if (!text)
        return -1;
    int rc = parse_schema(text, len, what, &e->wschema, &e->wjson, errstr, errstr_size);
    free(text);
    if (rc || ent_resolve(dec, e, what, errstr, errstr_size))
        return -1;
    fast_compile(dec, e);
    return 0;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    return s;
}

engage_decoder_t *engage_decoder_new(int confluent, const char *schema_map,
                                     const char *plain_schema_path, char *errstr,
                                     size_t errstr_size) {
    engage_decoder_t *dec = calloc(1, sizeof(*dec));
    char *map = NULL;
    json_error_t jerr;
    if (!dec)
        goto nomem;
    dec->confluent = confluent ? 1 : 0;
    dec->fast_on = 1;
    avro_clear_err();
    if (avro_schema_from_json_length(ENGAGE_SCHEMA_USER_ACTION,
                                     sizeof(ENGAGE_SCHEMA_USER_ACTION) - 1, &dec->rschema)) {
        dec->rschema = NULL;
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "reader schema: %s",
                      avro_strerror());
        goto fail;
    }
    dec->rjson = json_loadb(ENGAGE_SCHEMA_USER_ACTION, sizeof(ENGAGE_SCHEMA_USER_ACTION) - 1, 0,
                            &jerr);
    if (!dec->rjson || avro_typeof(dec->rschema) != AVRO_RECORD) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "reader schema is not a record");
        goto fail;
    }
    if (check_reader(dec->rschema, errstr, errstr_size))
        goto fail;
    if (!(dec->reader = avro_reader_memory(NULL, 0)))
        goto nomem;

    if (!confluent) {
        if (!plain_schema_path || !*plain_schema_path) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                          "plain Avro input needs a writer schema path");
            goto fail;
        }
        if (!(dec->ents = calloc(1, sizeof(*dec->ents))))
            goto nomem;
        dec->nents = 1;
        if (ent_load(dec, &dec->ents[0], 0, plain_schema_path, errstr, errstr_size))
            goto fail;
        return dec;
    }

    if (!schema_map || !*schema_map) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                      "Confluent framing needs a schema map \"ID=path,...\"");
        goto fail;
    }
    if (!(map = strdup(schema_map)))
        goto nomem;
    size_t cap = 1;
    for (const char *c = map; *c; c++)
        cap += *c == ',';
    if (!(dec->ents = calloc(cap, sizeof(*dec->ents))))
        goto nomem;
    char *save = NULL;
    for (char *tok = strtok_r(map, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                          "schema map entry \"%s\" is not ID=path", trim(tok));
            goto fail;
        }
        *eq = '\0';
        char *ids = trim(tok), *path = trim(eq + 1), *end;
        errno = 0;
        long long id = strtoll(ids, &end, 10);
        if (!*ids || *end || errno || id < 0 || id > INT32_MAX || !*path) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                          "schema map entry \"%s=%s\": bad id or empty path", ids, path);
            goto fail;
        }
        for (size_t k = 0; k < dec->nents; k++) {
            if (dec->ents[k].id == (int32_t)id) {
                engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                              "schema id %lld appears twice in the schema map", id);
                goto fail;
            }
        }
        writer_ent_t *e = &dec->ents[dec->nents++];
        if (ent_load(dec, e, (int32_t)id, path, errstr, errstr_size))
            goto fail;
    }
    if (dec->nents == 0) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "schema map is empty");
        goto fail;
    }
    free(map);
    return dec;
nomem:
    engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
fail:
    free(map);
    engage_decoder_destroy(dec);
    return NULL;
}

int32_t engage_decoder_default_schema_id(const engage_decoder_t *dec) {
    return dec && dec->confluent && dec->nents ? dec->ents[0].id : 0;
}

static writer_ent_t *find_ent(engage_decoder_t *dec, int32_t id) {
    for (size_t i = 0; i < dec->nents; i++)
        if (dec->ents[i].id == id)
            return &dec->ents[i];
    return NULL;
}

/* Strips framing: the writer entry and the datum bytes. */
static engage_err_t unframe(engage_decoder_t *dec, const void *buf, size_t len,
                            writer_ent_t **entp, const unsigned char **datum, size_t *dlen,
                            char *errstr, size_t errstr_size) {
    const unsigned char *p = buf;
    if (!buf && len)
        return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size, "NULL buffer");
    if (dec->confluent) {
        if (len < CONFLUENT_HDR)
            return engage_seterr(ENGAGE_ERR_BAD_FRAMING, errstr, errstr_size,
                                 "value of %zu bytes is shorter than the 5-byte header", len);
        if (p[0] != 0)
            return engage_seterr(ENGAGE_ERR_BAD_FRAMING, errstr, errstr_size,
                                 "magic byte 0x%02x, expected 0x00", p[0]);
        int32_t id = get_be32(p + 1);
        if (!(*entp = find_ent(dec, id)))
            return engage_seterr(ENGAGE_ERR_UNKNOWN_SCHEMA, errstr, errstr_size,
                                 "schema id %" PRId32 " is not configured", id);
        p += CONFLUENT_HDR;
        len -= CONFLUENT_HDR;
    } else {
        *entp = &dec->ents[0];
    }
    *datum = p;
    *dlen = len;
    return ENGAGE_ERR_OK;
}

/* Validates a datum and reads it into the writer's value (avro-c). */
static engage_err_t read_datum(engage_decoder_t *dec, writer_ent_t *e, const unsigned char *p,
                               size_t len, char *errstr, size_t errstr_size) {
    const char *why;
    if (vprog_check(&e->prog, p, len, &why))
        return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size, "%s", why);
    avro_reader_memory_set_source(dec->reader, (const char *)p, (int64_t)len);
    int rc = avro_value_read(dec->reader, &e->wval);
    if (rc)
        return engage_seterr(rc == ENOMEM ? ENGAGE_ERR_NOMEM : ENGAGE_ERR_BAD_AVRO, errstr,
                             errstr_size, "avro: %s", avro_strerror());
    return ENGAGE_ERR_OK;
}

/* Strips framing, validates and reads the datum into the writer's value. */
static engage_err_t decode_datum(engage_decoder_t *dec, const void *buf, size_t len,
                                 writer_ent_t **entp, char *errstr, size_t errstr_size) {
    const unsigned char *p;
    engage_err_t err = unframe(dec, buf, len, entp, &p, &len, errstr, errstr_size);
    return err ? err : read_datum(dec, *entp, p, len, errstr, errstr_size);
}

/* A string field through the resolved view; *s = NULL when the union is null. */
static int get_str(avro_value_t *f, const char **s, size_t *n) {
    avro_value_t br;
    if (avro_value_get_type(f) == AVRO_UNION) {
        if (avro_value_get_current_branch(f, &br))
            return -1;
        f = &br;
    }
    if (avro_value_get_type(f) == AVRO_NULL) {
        *s = NULL;
        *n = 0;
        return 0;
    }
    size_t sz;
    if (avro_value_get_string(f, s, &sz))
        return -1;
    *n = sz ? sz - 1 : 0;
    if (!*s)
        *s = "";
    return 0;
}

void engage_decoder_set_fast_path(engage_decoder_t *dec, int on) {
    if (dec)
        dec->fast_on = on ? 1 : 0;
}

engage_err_t engage_decoder_decode(engage_decoder_t *dec, const void *buf, size_t len,
                                   engage_action_t *out, char *errstr, size_t errstr_size) {
    writer_ent_t *e;
    const unsigned char *p;
    engage_err_t err = unframe(dec, buf, len, &e, &p, &len, errstr, errstr_size);
    if (err) {
        memset(out, 0, sizeof(*out));
        return err;
    }
    if (e->fast && dec->fast_on)
        return fast_decode(e, p, len, out, errstr, errstr_size); /* sets every field */
    memset(out, 0, sizeof(*out));
    if ((err = read_datum(dec, e, p, len, errstr, errstr_size)))
        return err;
    const char **sp[S__COUNT] = {&out->event_id, &out->user_id,  NULL,
                                 &out->action,   &out->platform, &out->app_version};
    size_t *lp[S__COUNT] = {&out->event_id_len, &out->user_id_len,  NULL,
                            &out->action_len,   &out->platform_len, &out->app_version_len};
    for (int s = 0; s < S__COUNT; s++) {
        const slot_default_t *d = &e->defaults[s];
        if (!d->present)
            continue;
        if (s == S_TS) {
            out->ts_ms = d->num;
        } else if (!d->is_null) {
            *sp[s] = d->str;
            *lp[s] = d->str_len;
        }
    }
    for (size_t i = 0; i < e->nrfields; i++) {
        int s = e->slot_of[i];
        avro_value_t f;
        if (s < 0)
            continue;
        if (avro_value_get_by_index(&e->rval, i, &f, NULL))
            goto bad;
        if (s == S_TS) {
            if (avro_value_get_long(&f, &out->ts_ms))
                goto bad;
        } else if (get_str(&f, sp[s], lp[s])) {
            goto bad;
        }
    }
    if (!out->event_id || !out->user_id || !out->action) {
        memset(out, 0, sizeof(*out));
        return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size,
                             "required field is null");
    }
    return ENGAGE_ERR_OK;
bad:
    memset(out, 0, sizeof(*out));
    return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size, "avro: %s",
                         avro_strerror());
}

/* Writes value v (after an optional 5-byte header) into b, growing it. */
static engage_err_t write_value(avro_writer_t w, avro_value_t *v, int confluent, int32_t id,
                                engage_buf_t *b, char *errstr, size_t errstr_size) {
    size_t hdr = confluent ? CONFLUENT_HDR : 0;
    b->len = 0;
    if (engage_buf_reserve(b, b->cap > 256 ? b->cap : 256))
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    for (;;) {
        avro_writer_memory_set_dest(w, b->p + hdr, (int64_t)(b->cap - hdr));
        int rc = avro_value_write(w, v);
        if (rc == 0)
            break;
        if (rc != ENOSPC || b->cap > (SIZE_MAX >> 2))
            return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size, "avro write: %s",
                                 avro_strerror());
        if (engage_buf_reserve(b, b->cap * 2))
            return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    if (confluent) {
        b->p[0] = 0;
        put_be32((unsigned char *)b->p + 1, id);
    }
    b->len = hdr + (size_t)avro_writer_tell(w);
    return ENGAGE_ERR_OK;
}

engage_err_t engage_codec_encode_action_json(engage_decoder_t *dec, int confluent,
                                             int32_t schema_id, const char *json,
                                             void **buf, size_t *len, char *errstr,
                                             size_t errstr_size) {
    json_error_t jerr;
    json_t *root = NULL;
    avro_writer_t w = NULL;
    engage_buf_t out = {0};
    engage_err_t err = ENGAGE_ERR_OK;
    char why[256] = "";
    *buf = NULL;
    *len = 0;
    if (!dec || !json)
        return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size, "NULL argument");
    writer_ent_t *e = dec->confluent ? find_ent(dec, schema_id) : &dec->ents[0];
    if (!e)
        return engage_seterr(ENGAGE_ERR_UNKNOWN_SCHEMA, errstr, errstr_size,
                             "schema id %" PRId32 " is not configured", schema_id);
    root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                            "event is not a JSON object: %s", root ? "" : jerr.text);
        goto out;
    }
    if (!e->has_encval) {
        if (avro_generic_value_new(e->wcls, &e->encval)) {
            err = engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
            goto out;
        }
        e->has_encval = 1;
    }
    avro_value_reset(&e->encval);
    size_t n = avro_schema_record_size(e->wschema);
    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(e->wschema, (int)i);
        json_t *m = json_object_get(root, name), *tmp = NULL;
        avro_value_t f;
        if (avro_value_get_by_index(&e->encval, i, &f, NULL)) {
            err = engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size, "avro: %s",
                                avro_strerror());
            goto out;
        }
        if (!m) {
            json_t *fj = json_array_get(json_object_get(e->wjson, "fields"), i);
            m = json_object_get(fj, "default");
            if (m && avro_value_get_type(&f) == AVRO_UNION && !json_is_null(m)) {
                /* a union's default belongs to its first branch */
                avro_value_t br;
                if (avro_value_set_branch(&f, 0, &br)) {
                    err = engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size, "avro: %s",
                                        avro_strerror());
                    goto out;
                }
                f = br;
            } else if (!m) {
                if (avro_value_get_type(&f) != AVRO_UNION ||
                    union_null_branch(avro_value_get_schema(&f)) < 0) {
                    err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                                        "missing required field %s", name);
                    goto out;
                }
                m = tmp = json_null();
            }
        }
        int rc = set_from_json(&f, m, 0, why, sizeof(why));
        json_decref(tmp);
        if (rc) {
            err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size, "field %s: %s",
                                name, why);
            goto out;
        }
    }
    if (!(w = avro_writer_memory(NULL, 0))) {
        err = engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        goto out;
    }
    err = write_value(w, &e->encval, confluent, schema_id, &out, errstr, errstr_size);
    if (err)
        goto out;
    *buf = out.p; /* ownership to the caller */
    *len = out.len;
    out.p = NULL;
out:
    if (w)
        avro_writer_free(w);
    engage_buf_free(&out);
    json_decref(root);
    return err;
}

/* ---- encoder --------------------------------------------------------------- */

enum { K_SESSION, K_DAILY, K_PARTIAL, K_SESSION_METRICS, K__COUNT };

/* Field names per output kind, in the order the encode functions fill them. */
static const char *const session_fields[] = {"session_id", "user_id", "start_ms", "end_ms",
                                             "duration_ms", "actions",  "date",     NULL};
static const char *const daily_fields[] = {"date",
                                           "dau",
                                           "wau",
                                           "mau",
                                           "sessions",
                                           "session_users",
                                           "avg_duration_ms",
                                           "actions_per_session",
                                           "duration_q1",
                                           "duration_q3",
                                           "actions_q1",
                                           "actions_q3",
                                           "duration_lower_fence",
                                           "duration_upper_fence",
                                           "actions_lower_fence",
                                           "actions_upper_fence",
                                           "valid_sessions",
                                           "valid_users",
                                           "valid_avg_duration_ms",
                                           "valid_actions_per_session",
                                           "duration_outliers",
                                           "actions_outliers",
                                           NULL};
static const char *const partial_fields[] = {
    "day",           "partition",       "partition_count", "dau",           "wau",
    "mau",           "sessions",        "session_users",   "sum_duration_ms", "sum_actions",
    "max_event_day", "is_end",          NULL};

static const char *const session_metrics_fields[] = {"date",
                                                     "sessions",
                                                     "duration_q1",
                                                     "duration_q3",
                                                     "actions_q1",
                                                     "actions_q3",
                                                     "duration_lower_fence",
                                                     "duration_upper_fence",
                                                     "actions_lower_fence",
                                                     "actions_upper_fence",
                                                     "valid_sessions",
                                                     "valid_users",
                                                     "valid_avg_duration_ms",
                                                     "valid_actions_per_session",
                                                     "duration_outliers",
                                                     "actions_outliers",
                                                     "iqr_multiplier",
                                                     NULL};

#define MAX_OUT_FIELDS 24
#define DEFAULT_SESSION_METRICS_SCHEMA_ID 104

typedef struct out_kind {
    int32_t id;
    avro_schema_t schema;
    avro_value_iface_t *cls;
    avro_value_t val;
    vprog_t prog;
    size_t idx[MAX_OUT_FIELDS]; /* field name list position -> schema index */
    size_t nfields;
} out_kind_t;

struct engage_encoder {
    int confluent;
    out_kind_t k[K__COUNT];
    avro_writer_t writer;
    avro_reader_t reader;
    engage_buf_t out;     /* encoded value; returned pointers point here */
    engage_buf_t scratch; /* NUL-terminated copy of a user id */
};

void engage_encoder_destroy(engage_encoder_t *enc) {
    if (!enc)
        return;
    for (int i = 0; i < K__COUNT; i++) {
        out_kind_t *k = &enc->k[i];
        if (k->val.self)
            avro_value_decref(&k->val);
        if (k->cls)
            avro_value_iface_decref(k->cls);
        if (k->schema)
            avro_schema_decref(k->schema);
        vprog_free(&k->prog);
    }
    if (enc->writer)
        avro_writer_free(enc->writer);
    if (enc->reader)
        avro_reader_free(enc->reader);
    engage_buf_free(&enc->out);
    engage_buf_free(&enc->scratch);
    free(enc);
}

static int kind_init(out_kind_t *k, const char *text, size_t len, const char *what,
                     const char *const *names, int32_t id, char *errstr, size_t errstr_size) {
    k->id = id;
    avro_clear_err();
    if (avro_schema_from_json_length(text, len, &k->schema)) {
        k->schema = NULL;
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s schema: %s", what,
                      avro_strerror());
        return -1;
    }
    if (avro_typeof(k->schema) != AVRO_RECORD) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s schema is not a record",
                      what);
        return -1;
    }
    for (k->nfields = 0; names[k->nfields]; k->nfields++) {
        int i = avro_schema_record_field_get_index(k->schema, names[k->nfields]);
        if (i < 0) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s schema lacks field %s",
                          what, names[k->nfields]);
            return -1;
        }
        k->idx[k->nfields] = (size_t)i;
    }
    if (k->nfields != avro_schema_record_size(k->schema)) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                      "%s schema has fields the encoder does not fill", what);
        return -1;
    }
    if (!(k->cls = avro_generic_class_from_schema(k->schema)) ||
        avro_generic_value_new(k->cls, &k->val) || vprog_init(&k->prog, k->schema)) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "%s schema: cannot build values",
                      what);
        return -1;
    }
    return 0;
}

engage_encoder_t *engage_encoder_new(int confluent, int32_t session_schema_id,
                                     int32_t daily_schema_id, int32_t partial_schema_id,
                                     char *errstr, size_t errstr_size) {
    engage_encoder_t *enc = calloc(1, sizeof(*enc));
    if (!enc) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    enc->confluent = confluent ? 1 : 0;
    if (kind_init(&enc->k[K_SESSION], ENGAGE_SCHEMA_SESSION, sizeof(ENGAGE_SCHEMA_SESSION) - 1,
                  "session", session_fields, session_schema_id, errstr, errstr_size) ||
        kind_init(&enc->k[K_DAILY], ENGAGE_SCHEMA_DAILY_METRICS,
                  sizeof(ENGAGE_SCHEMA_DAILY_METRICS) - 1, "daily_metrics", daily_fields,
                  daily_schema_id, errstr, errstr_size) ||
        kind_init(&enc->k[K_PARTIAL], ENGAGE_SCHEMA_DAY_PARTIAL,
                  sizeof(ENGAGE_SCHEMA_DAY_PARTIAL) - 1, "day_partial", partial_fields,
                  partial_schema_id, errstr, errstr_size) ||
        kind_init(&enc->k[K_SESSION_METRICS], ENGAGE_SCHEMA_SESSION_METRICS,
                  sizeof(ENGAGE_SCHEMA_SESSION_METRICS) - 1, "session_metrics",
                  session_metrics_fields, DEFAULT_SESSION_METRICS_SCHEMA_ID, errstr,
                  errstr_size))
        goto fail;
    if (!(enc->writer = avro_writer_memory(NULL, 0)) ||
        !(enc->reader = avro_reader_memory(NULL, 0))) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
    return enc;
fail:
    engage_encoder_destroy(enc);
    return NULL;
}

/* Field j (position in the kind's name list) of kind k's value. */
static int kfield(out_kind_t *k, size_t j, avro_value_t *f) {
    return avro_value_get_by_index(&k->val, k->idx[j], f, NULL);
}

static int kset_long(out_kind_t *k, size_t j, int64_t v) {
    avro_value_t f;
    return kfield(k, j, &f) || avro_value_set_long(&f, v);
}

static int kset_int(out_kind_t *k, size_t j, int32_t v) {
    avro_value_t f;
    return kfield(k, j, &f) || avro_value_set_int(&f, v);
}

static int kset_double(out_kind_t *k, size_t j, double v) {
    avro_value_t f;
    return kfield(k, j, &f) || avro_value_set_double(&f, v);
}

/* s[0..n) then NUL must be readable; size passed to avro includes the NUL. */
static int kset_str(out_kind_t *k, size_t j, const char *s, size_t n) {
    avro_value_t f;
    return kfield(k, j, &f) || avro_value_set_string_len(&f, s, n + 1);
}

/* Nullable: branch of null or of the value (has = 0 -> null). */
static int kset_opt_double(out_kind_t *k, size_t j, int has, double v) {
    avro_value_t f, br;
    avro_schema_t u;
    if (kfield(k, j, &f))
        return -1;
    u = avro_value_get_schema(&f);
    int nb = union_null_branch(u);
    if (nb < 0)
        return -1;
    if (!has)
        return avro_value_set_branch(&f, nb, &br) || avro_value_set_null(&br);
    return avro_value_set_branch(&f, 1 - nb, &br) || avro_value_set_double(&br, v);
}

static int kset_opt_long(out_kind_t *k, size_t j, int has, int64_t v) {
    avro_value_t f, br;
    if (kfield(k, j, &f))
        return -1;
    int nb = union_null_branch(avro_value_get_schema(&f));
    if (nb < 0)
        return -1;
    if (!has)
        return avro_value_set_branch(&f, nb, &br) || avro_value_set_null(&br);
    return avro_value_set_branch(&f, 1 - nb, &br) || avro_value_set_long(&br, v);
}

static engage_err_t finish(engage_encoder_t *enc, out_kind_t *k, const void **buf, size_t *len) {
    engage_err_t err = write_value(enc->writer, &k->val, enc->confluent, k->id, &enc->out, NULL, 0);
    if (err)
        return err;
    *buf = enc->out.p;
    *len = enc->out.len;
    return ENGAGE_ERR_OK;
}

/* The Session record written directly (one per closed session: the most
 * frequent output): the bytes avro-c writes for the compiled-in
 * schemas/session.avsc, field by field (strings: length + bytes; long and
 * int: zig-zag varints), without building an avro value. test_codec
 * compares it with engage_encode_session_generic() on generated and edge
 * records. */
engage_err_t engage_encode_session(engage_encoder_t *enc, const engage_session_rec_t *r,
                                   const void **buf, size_t *len) {
    if (!r->session_id || (!r->user_id && r->user_id_len))
        return ENGAGE_ERR_INVALID_ARG;
    char date[16];
    engage_day_format(r->day, date, sizeof(date));
    size_t sid_len = strlen(r->session_id), date_len = strlen(date);
    size_t hdr = enc->confluent ? CONFLUENT_HDR : 0;
    size_t need = hdr + 10 + sid_len + 10 + r->user_id_len + 3 * 10 + 5 + 10 + date_len;
    engage_buf_t *b = &enc->out;
    b->len = 0;
    if (engage_buf_reserve(b, need))
        return ENGAGE_ERR_NOMEM;
    unsigned char *p0 = (unsigned char *)b->p, *p = p0 + hdr;
    if (enc->confluent) {
        p0[0] = 0;
        put_be32(p0 + 1, enc->k[K_SESSION].id);
    }
    p = engage_avro_put_string(p, r->session_id, sid_len);
    p = engage_avro_put_string(p, r->user_id, r->user_id_len);
    p = engage_avro_put_long(p, r->start_ms);
    p = engage_avro_put_long(p, r->end_ms);
    p = engage_avro_put_long(p, r->duration_ms);
    p = engage_avro_put_long(p, (int32_t)r->actions);
    p = engage_avro_put_string(p, date, date_len);
    b->len = (size_t)(p - p0);
    *buf = b->p;
    *len = b->len;
    return ENGAGE_ERR_OK;
}

engage_err_t engage_encode_session_generic(engage_encoder_t *enc, const engage_session_rec_t *r,
                                           const void **buf, size_t *len) {
    out_kind_t *k = &enc->k[K_SESSION];
    char date[16];
    if (!r->session_id || (!r->user_id && r->user_id_len))
        return ENGAGE_ERR_INVALID_ARG;
    /* user_id is not NUL-terminated: copy it so avro can take len + NUL */
    enc->scratch.len = 0;
    if (engage_buf_append(&enc->scratch, r->user_id ? r->user_id : "", r->user_id_len) ||
        engage_buf_append(&enc->scratch, "", 1))
        return ENGAGE_ERR_NOMEM;
    engage_day_format(r->day, date, sizeof(date));
    if (kset_str(k, 0, r->session_id, strlen(r->session_id)) ||
        kset_str(k, 1, enc->scratch.p, r->user_id_len) || kset_long(k, 2, r->start_ms) ||
        kset_long(k, 3, r->end_ms) || kset_long(k, 4, r->duration_ms) ||
        kset_int(k, 5, r->actions) || kset_str(k, 6, date, strlen(date)))
        return ENGAGE_ERR_BAD_AVRO;
    return finish(enc, k, buf, len);
}

engage_err_t engage_encode_daily(engage_encoder_t *enc, const engage_daily_rec_t *r,
                                 const void **buf, size_t *len) {
    out_kind_t *k = &enc->k[K_DAILY];
    char date[16];
    int h = r->has_iqr != 0;
    engage_day_format(r->day, date, sizeof(date));
    if (kset_str(k, 0, date, strlen(date)) || kset_long(k, 1, r->dau) ||
        kset_long(k, 2, r->wau) || kset_long(k, 3, r->mau) || kset_long(k, 4, r->sessions) ||
        kset_long(k, 5, r->session_users) || kset_double(k, 6, r->avg_duration_ms) ||
        kset_double(k, 7, r->actions_per_session) ||
        kset_opt_double(k, 8, h, r->duration_q1) || kset_opt_double(k, 9, h, r->duration_q3) ||
        kset_opt_double(k, 10, h, r->actions_q1) || kset_opt_double(k, 11, h, r->actions_q3) ||
        kset_opt_double(k, 12, h, r->duration_lower_fence) ||
        kset_opt_double(k, 13, h, r->duration_upper_fence) ||
        kset_opt_double(k, 14, h, r->actions_lower_fence) ||
        kset_opt_double(k, 15, h, r->actions_upper_fence) ||
        kset_opt_long(k, 16, h, r->valid_sessions) || kset_opt_long(k, 17, h, r->valid_users) ||
        kset_opt_double(k, 18, h, r->valid_avg_duration_ms) ||
        kset_opt_double(k, 19, h, r->valid_actions_per_session) ||
        kset_opt_long(k, 20, h, r->duration_outliers) ||
        kset_opt_long(k, 21, h, r->actions_outliers))
        return ENGAGE_ERR_BAD_AVRO;
    return finish(enc, k, buf, len);
}

engage_err_t engage_encode_partial(engage_encoder_t *enc, const engage_partial_rec_t *r,
                                   const void **buf, size_t *len) {
    out_kind_t *k = &enc->k[K_PARTIAL];
    if (kset_int(k, 0, r->day) || kset_int(k, 1, r->partition) ||
        kset_int(k, 2, r->partition_count) || kset_long(k, 3, r->dau) ||
        kset_long(k, 4, r->wau) || kset_long(k, 5, r->mau) || kset_long(k, 6, r->sessions) ||
        kset_long(k, 7, r->session_users) || kset_long(k, 8, r->sum_duration_ms) ||
        kset_long(k, 9, r->sum_actions) || kset_int(k, 10, r->max_event_day) ||
        kset_int(k, 11, r->is_end))
        return ENGAGE_ERR_BAD_AVRO;
    return finish(enc, k, buf, len);
}

/* Strips framing (the id is not checked: the schema is compiled in),
 * validates and reads an output value into k->val. */
static engage_err_t kind_read(engage_encoder_t *enc, out_kind_t *k, const void *buf, size_t len,
                              char *errstr, size_t errstr_size) {
    const unsigned char *p = buf;
    const char *why;
    if (!buf && len)
        return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size, "NULL buffer");
    if (enc->confluent) {
        if (len < CONFLUENT_HDR)
            return engage_seterr(ENGAGE_ERR_BAD_FRAMING, errstr, errstr_size,
                                 "value of %zu bytes is shorter than the 5-byte header", len);
        if (p[0] != 0)
            return engage_seterr(ENGAGE_ERR_BAD_FRAMING, errstr, errstr_size,
                                 "magic byte 0x%02x, expected 0x00", p[0]);
        p += CONFLUENT_HDR;
        len -= CONFLUENT_HDR;
    }
    if (vprog_check(&k->prog, p, len, &why))
        return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size, "%s", why);
    avro_reader_memory_set_source(enc->reader, (const char *)p, (int64_t)len);
    int rc = avro_value_read(enc->reader, &k->val);
    if (rc)
        return engage_seterr(rc == ENOMEM ? ENGAGE_ERR_NOMEM : ENGAGE_ERR_BAD_AVRO, errstr,
                             errstr_size, "avro: %s", avro_strerror());
    return ENGAGE_ERR_OK;
}

engage_err_t engage_decode_partial(engage_encoder_t *enc, const void *buf, size_t len,
                                   engage_partial_rec_t *out) {
    out_kind_t *k = &enc->k[K_PARTIAL];
    engage_err_t err = kind_read(enc, k, buf, len, NULL, 0);
    if (err)
        return err;
    int32_t *ints[] = {&out->day, &out->partition, &out->partition_count};
    int64_t *longs[] = {&out->dau,           &out->wau,           &out->mau,
                        &out->sessions,      &out->session_users, &out->sum_duration_ms,
                        &out->sum_actions};
    avro_value_t f;
    memset(out, 0, sizeof(*out));
    for (size_t j = 0; j < 3; j++)
        if (kfield(k, j, &f) || avro_value_get_int(&f, ints[j]))
            return ENGAGE_ERR_BAD_AVRO;
    for (size_t j = 0; j < 7; j++)
        if (kfield(k, 3 + j, &f) || avro_value_get_long(&f, longs[j]))
            return ENGAGE_ERR_BAD_AVRO;
    if (kfield(k, 10, &f) || avro_value_get_int(&f, &out->max_event_day) || kfield(k, 11, &f) ||
        avro_value_get_int(&f, &out->is_end))
        return ENGAGE_ERR_BAD_AVRO;
    return ENGAGE_ERR_OK;
}

/* ---- SessionMetrics, and reading Session / DailyMetrics back --------------- */

engage_err_t engage_encoder_set_schema_id(engage_encoder_t *enc, engage_kind_t kind,
                                          int32_t id) {
    int ki = kind == ENGAGE_KIND_SESSION           ? K_SESSION
             : kind == ENGAGE_KIND_DAILY           ? K_DAILY
             : kind == ENGAGE_KIND_PARTIAL         ? K_PARTIAL
             : kind == ENGAGE_KIND_SESSION_METRICS ? K_SESSION_METRICS
                                                   : -1;
    if (!enc || ki < 0 || id < 0)
        return ENGAGE_ERR_INVALID_ARG;
    enc->k[ki].id = id;
    return ENGAGE_ERR_OK;
}

engage_err_t engage_encode_session_metrics(engage_encoder_t *enc,
                                           const engage_session_metrics_rec_t *r,
                                           const void **buf, size_t *len) {
    out_kind_t *k = &enc->k[K_SESSION_METRICS];
    char date[16];
    int h = r->has_quartiles != 0;
    engage_day_format(r->day, date, sizeof(date));
    if (kset_str(k, 0, date, strlen(date)) || kset_long(k, 1, r->sessions) ||
        kset_opt_double(k, 2, h, r->duration_q1) || kset_opt_double(k, 3, h, r->duration_q3) ||
        kset_opt_double(k, 4, h, r->actions_q1) || kset_opt_double(k, 5, h, r->actions_q3) ||
        kset_opt_double(k, 6, h, r->duration_lower_fence) ||
        kset_opt_double(k, 7, h, r->duration_upper_fence) ||
        kset_opt_double(k, 8, h, r->actions_lower_fence) ||
        kset_opt_double(k, 9, h, r->actions_upper_fence) ||
        kset_long(k, 10, r->valid_sessions) || kset_long(k, 11, r->valid_users) ||
        kset_double(k, 12, r->valid_avg_duration_ms) ||
        kset_double(k, 13, r->valid_actions_per_session) ||
        kset_long(k, 14, r->duration_outliers) || kset_long(k, 15, r->actions_outliers) ||
        kset_double(k, 16, r->iqr_multiplier))
        return ENGAGE_ERR_BAD_AVRO;
    return finish(enc, k, buf, len);
}

static int kget_long(out_kind_t *k, size_t j, int64_t *v) {
    avro_value_t f;
    return kfield(k, j, &f) || avro_value_get_long(&f, v);
}

static int kget_int(out_kind_t *k, size_t j, int32_t *v) {
    avro_value_t f;
    return kfield(k, j, &f) || avro_value_get_int(&f, v);
}

static int kget_double(out_kind_t *k, size_t j, double *v) {
    avro_value_t f;
    return kfield(k, j, &f) || avro_value_get_double(&f, v);
}

/* *s points into the value (NUL-terminated by avro-c), *n excludes the NUL. */
static int kget_str(out_kind_t *k, size_t j, const char **s, size_t *n) {
    avro_value_t f;
    size_t sz = 0;
    if (kfield(k, j, &f) || avro_value_get_string(&f, s, &sz) || !*s || sz == 0)
        return -1;
    *n = sz - 1;
    return 0;
}

static int kget_date(out_kind_t *k, size_t j, int32_t *day) {
    const char *s;
    size_t n;
    return kget_str(k, j, &s, &n) || strlen(s) != n || engage_day_parse(s, day);
}

/* Nullable: *has = 0 for null (then *v = 0). */
static int kget_opt(out_kind_t *k, size_t j, int *has, double *d, int64_t *l) {
    avro_value_t f, br;
    if (kfield(k, j, &f) || avro_value_get_current_branch(&f, &br))
        return -1;
    if (d)
        *d = 0;
    if (l)
        *l = 0;
    if (avro_value_get_type(&br) == AVRO_NULL) {
        *has = 0;
        return 0;
    }
    *has = 1;
    return d ? avro_value_get_double(&br, d) : avro_value_get_long(&br, l);
}

engage_err_t engage_decode_session(engage_encoder_t *enc, const void *buf, size_t len,
                                   engage_session_rec_t *out) {
    out_kind_t *k = &enc->k[K_SESSION];
    memset(out, 0, sizeof(*out));
    engage_err_t err = kind_read(enc, k, buf, len, NULL, 0);
    if (err)
        return err;
    size_t idlen;
    if (kget_str(k, 0, &out->session_id, &idlen) ||
        kget_str(k, 1, &out->user_id, &out->user_id_len) || kget_long(k, 2, &out->start_ms) ||
        kget_long(k, 3, &out->end_ms) || kget_long(k, 4, &out->duration_ms) ||
        kget_int(k, 5, &out->actions) || kget_date(k, 6, &out->day)) {
        memset(out, 0, sizeof(*out));
        return ENGAGE_ERR_BAD_AVRO;
    }
    return ENGAGE_ERR_OK;
}

engage_err_t engage_decode_daily(engage_encoder_t *enc, const void *buf, size_t len,
                                 engage_daily_rec_t *out) {
    out_kind_t *k = &enc->k[K_DAILY];
    memset(out, 0, sizeof(*out));
    engage_err_t err = kind_read(enc, k, buf, len, NULL, 0);
    if (err)
        return err;
    double *dbl[] = {&out->duration_q1,          &out->duration_q3,
                     &out->actions_q1,           &out->actions_q3,
                     &out->duration_lower_fence, &out->duration_upper_fence,
                     &out->actions_lower_fence,  &out->actions_upper_fence};
    int has[14], all = 1;
    int bad = kget_date(k, 0, &out->day) || kget_long(k, 1, &out->dau) ||
              kget_long(k, 2, &out->wau) || kget_long(k, 3, &out->mau) ||
              kget_long(k, 4, &out->sessions) || kget_long(k, 5, &out->session_users) ||
              kget_double(k, 6, &out->avg_duration_ms) ||
              kget_double(k, 7, &out->actions_per_session);
    for (size_t j = 0; !bad && j < 8; j++)
        bad = kget_opt(k, 8 + j, &has[j], dbl[j], NULL);
    bad = bad || kget_opt(k, 16, &has[8], NULL, &out->valid_sessions) ||
          kget_opt(k, 17, &has[9], NULL, &out->valid_users) ||
          kget_opt(k, 18, &has[10], &out->valid_avg_duration_ms, NULL) ||
          kget_opt(k, 19, &has[11], &out->valid_actions_per_session, NULL) ||
          kget_opt(k, 20, &has[12], NULL, &out->duration_outliers) ||
          kget_opt(k, 21, &has[13], NULL, &out->actions_outliers);
    if (bad) {
        memset(out, 0, sizeof(*out));
        return ENGAGE_ERR_BAD_AVRO;
    }
    for (int j = 0; j < 14; j++)
        all &= has[j];
    out->has_iqr = all; /* the processor writes all of them or none */
    return ENGAGE_ERR_OK;
}

engage_err_t engage_decode_session_metrics(engage_encoder_t *enc, const void *buf, size_t len,
                                           engage_session_metrics_rec_t *out) {
    out_kind_t *k = &enc->k[K_SESSION_METRICS];
    memset(out, 0, sizeof(*out));
    engage_err_t err = kind_read(enc, k, buf, len, NULL, 0);
    if (err)
        return err;
    double *dbl[] = {&out->duration_q1,          &out->duration_q3,
                     &out->actions_q1,           &out->actions_q3,
                     &out->duration_lower_fence, &out->duration_upper_fence,
                     &out->actions_lower_fence,  &out->actions_upper_fence};
    int has[8], all = 1;
    int bad = kget_date(k, 0, &out->day) || kget_long(k, 1, &out->sessions);
    for (size_t j = 0; !bad && j < 8; j++) {
        bad = kget_opt(k, 2 + j, &has[j], dbl[j], NULL);
        all &= !bad && has[j];
    }
    bad = bad || kget_long(k, 10, &out->valid_sessions) ||
          kget_long(k, 11, &out->valid_users) ||
          kget_double(k, 12, &out->valid_avg_duration_ms) ||
          kget_double(k, 13, &out->valid_actions_per_session) ||
          kget_long(k, 14, &out->duration_outliers) ||
          kget_long(k, 15, &out->actions_outliers) || kget_double(k, 16, &out->iqr_multiplier);
    if (bad) {
        memset(out, 0, sizeof(*out));
        return ENGAGE_ERR_BAD_AVRO;
    }
    out->has_quartiles = all;
    return ENGAGE_ERR_OK;
}

/* ---- JSON rendering entry point ------------------------------------------ */

/* The reader's view of a decoded UserAction, in reader field order; fields
 * the writer lacked take the reader schema's default. */
static json_t *render_action(engage_decoder_t *dec, writer_ent_t *e) {
    json_t *o = json_object(), *f;
    size_t i;
    if (!o)
        return NULL;
    json_array_foreach(json_object_get(dec->rjson, "fields"), i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        int ri = name ? avro_schema_record_field_get_index(e->rschema, name) : -1;
        json_t *c;
        if (ri >= 0) {
            avro_value_t fv;
            c = avro_value_get_by_index(&e->rval, (size_t)ri, &fv, NULL) ? NULL : render(&fv, 1);
        } else {
            c = json_deep_copy(json_object_get(f, "default"));
        }
        if (!c || json_object_set_new(o, name, c)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

engage_err_t engage_codec_to_json(engage_decoder_t *dec, engage_encoder_t *enc,
                                  engage_kind_t kind, const void *buf, size_t len,
                                  char **json, char *errstr, size_t errstr_size) {
    engage_err_t err;
    *json = NULL;
    if (kind == ENGAGE_KIND_USER_ACTION) {
        writer_ent_t *e;
        if (!dec)
            return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                                 "USER_ACTION needs a decoder");
        if ((err = decode_datum(dec, buf, len, &e, errstr, errstr_size)))
            return err;
        avro_clear_err();
        json_t *j = render_action(dec, e);
        if (!j)
            return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size,
                                 "cannot render the record: %s", avro_strerror());
        return dump_json(j, json, errstr, errstr_size);
    }
    int ki = kind == ENGAGE_KIND_SESSION ? K_SESSION
             : kind == ENGAGE_KIND_DAILY ? K_DAILY
             : kind == ENGAGE_KIND_PARTIAL ? K_PARTIAL
             : kind == ENGAGE_KIND_SESSION_METRICS ? K_SESSION_METRICS
                                                   : -1;
    if (ki < 0 || !enc)
        return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                             ki < 0 ? "unknown record kind" : "output kinds need an encoder");
    if ((err = kind_read(enc, &enc->k[ki], buf, len, errstr, errstr_size)))
        return err;
    json_t *j = render(&enc->k[ki].val, 0);
    if (!j)
        return engage_seterr(ENGAGE_ERR_BAD_AVRO, errstr, errstr_size,
                             "cannot render the record");
    return dump_json(j, json, errstr, errstr_size);
}
