/*
 * state.c - RocksDB adapter.
 *
 * Everything RocksDB-specific stays here: the char **errptr convention (each
 * error string is copied into the caller's errstr and released with
 * rocksdb_free), RocksDB-allocated values (copied into plain malloc memory
 * so callers free() them), and the option objects.
 *
 * Options: LZ4 block compression (state is mostly bitmaps and hash lists,
 * which compress well and cheaply), a 32 MiB LRU block cache per store,
 * two background threads. Writes use the WAL without fsync: a crash of the
 * process loses nothing, a power loss may lose the last batches, which the
 * stored offsets make Kafka replay.
 *
 * Memtable: a vector, not the default skiplist. A store takes hundreds of
 * thousands of puts per checkpoint and is read only when it is opened (one
 * get and a few prefix scans), so appending each put and sorting once - at
 * flush, or when a reader needs the mutable memtable in order - costs far
 * less than a skiplist search per put (the search was most of the task's
 * per-record CPU). It changes neither what is written to the WAL nor when,
 * nor what a read returns; a vector memtable does not take concurrent
 * writes, so those are off (each store has one writer).
 *
 * If a commit fails, the batch is kept so the caller may retry or give up;
 * engage_state_close() discards it.
 */
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <rocksdb/c.h>

#define STATE_BLOCK_CACHE_BYTES (32u << 20)
/* Memtable size per store (RocksDB's default is 64 MiB). A member holds one
 * store per owned partition plus the aggregator's, each with up to two
 * memtables (one being flushed), so this bounds most of the memory the
 * stores take. A checkpoint writes ~3 MB per 100,000 records; 4 MiB kept
 * the 1M-user replay's peak RSS 54 MB lower than 16 MiB (64 MiB: 128 MB
 * more) at the same wall time, with more, smaller flushes
 * (docs/BENCHMARKS.md). */
#define STATE_WRITE_BUFFER_BYTES ((size_t)4 << 20)

struct engage_state {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *bbto;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
    rocksdb_writebatch_t *wb;
    char *path;
    engage_state_mirror_cb *mirror;
    void *mirror_opaque;
    int mirror_failed;
};

/* Moves a RocksDB error into errstr and frees it. Returns STATE. */
static engage_err_t take_err(char *rerr, const char *what, char *errstr, size_t errstr_size) {
    engage_seterr(ENGAGE_ERR_STATE, errstr, errstr_size, "%s: %s", what,
                  rerr ? rerr : "unknown error");
    rocksdb_free(rerr);
    return ENGAGE_ERR_STATE;
}

/* mkdir -p. Returns 0, or -1 with errno set. */
static int mkdir_p(const char *path) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 1);
    if (!tmp) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            free(tmp);
            errno = e;
            return -1;
        }
        tmp[i] = c;
    }
    free(tmp);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static rocksdb_options_t *make_options(rocksdb_block_based_table_options_t **bbto,
                                       rocksdb_cache_t **cache) {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_increase_parallelism(o, 2);
    rocksdb_options_set_compression(o, rocksdb_lz4_compression);
    rocksdb_options_set_memtable_vector_rep(o);
    rocksdb_options_set_allow_concurrent_memtable_write(o, 0);
    rocksdb_options_set_write_buffer_size(o, STATE_WRITE_BUFFER_BYTES);
    /* RocksDB's info LOG files are not state: keep two, of bounded size,
     * so a store's footprint on disk follows its data */
    rocksdb_options_set_keep_log_file_num(o, 2);
    rocksdb_options_set_max_log_file_size(o, 1 << 20);
    *cache = rocksdb_cache_create_lru(STATE_BLOCK_CACHE_BYTES);
    *bbto = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(*bbto, *cache);
    rocksdb_options_set_block_based_table_factory(o, *bbto);
    return o;
}

engage_state_t *engage_state_open(const char *path, char *errstr, size_t errstr_size) {
    char *rerr = NULL;
    engage_state_t *st = calloc(1, sizeof(*st));
    if (!st) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (mkdir_p(path) != 0) {
        engage_seterr(ENGAGE_ERR_IO, errstr, errstr_size, "state dir %s: %s", path,
                      strerror(errno));
        goto fail;
    }
    st->path = strdup(path);
    if (!st->path) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
    st->opts = make_options(&st->bbto, &st->cache);
    st->db = rocksdb_open(st->opts, path, &rerr);
    if (rerr) {
        char what[512];
        snprintf(what, sizeof(what), "open %s", path);
        take_err(rerr, what, errstr, errstr_size);
        goto fail;
    }
    st->wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(st->wopts, 0);
    rocksdb_writeoptions_disable_WAL(st->wopts, 0);
    st->ropts = rocksdb_readoptions_create();
    st->wb = rocksdb_writebatch_create();
    return st;

fail:
    engage_state_close(st);
    return NULL;
}

void engage_state_close(engage_state_t *st) {
    if (!st)
        return;
    if (st->wb)
        rocksdb_writebatch_destroy(st->wb);
    if (st->db)
        rocksdb_close(st->db);
    if (st->ropts)
        rocksdb_readoptions_destroy(st->ropts);
    if (st->wopts)
        rocksdb_writeoptions_destroy(st->wopts);
    if (st->opts)
        rocksdb_options_destroy(st->opts);
    if (st->bbto)
        rocksdb_block_based_options_destroy(st->bbto);
    if (st->cache)
        rocksdb_cache_destroy(st->cache);
    free(st->path);
    free(st);
}

engage_err_t engage_state_get(engage_state_t *st, const void *key, size_t klen, void **val,
                              size_t *vlen, char *errstr, size_t errstr_size) {
    char *rerr = NULL;
    size_t n = 0;
    char *v = rocksdb_get(st->db, st->ropts, key, klen, &n, &rerr);
    if (rerr)
        return take_err(rerr, "get", errstr, errstr_size);
    if (!v)
        return ENGAGE_ERR_NOT_FOUND;
    void *copy = malloc(n ? n : 1);
    if (!copy) {
        rocksdb_free(v);
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    memcpy(copy, v, n);
    rocksdb_free(v);
    *val = copy;
    *vlen = n;
    return ENGAGE_ERR_OK;
}

engage_err_t engage_state_iterate(engage_state_t *st, const void *prefix, size_t plen,
                                  engage_state_iter_cb *cb, void *opaque, char *errstr,
                                  size_t errstr_size) {
    rocksdb_iterator_t *it = rocksdb_create_iterator(st->db, st->ropts);
    if (plen)
        rocksdb_iter_seek(it, prefix, plen);
    else
        rocksdb_iter_seek_to_first(it);
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (plen && (kl < plen || memcmp(k, prefix, plen) != 0))
            break;
        const char *v = rocksdb_iter_value(it, &vl);
        if (cb(opaque, k, kl, v, vl))
            break;
    }
    char *rerr = NULL;
    rocksdb_iter_get_error(it, &rerr);
    rocksdb_iter_destroy(it);
    if (rerr)
        return take_err(rerr, "iterate", errstr, errstr_size);
    return ENGAGE_ERR_OK;
}

void engage_state_put(engage_state_t *st, const void *key, size_t klen, const void *val,
                      size_t vlen) {
    rocksdb_writebatch_put(st->wb, key, klen, val, vlen);
    if (st->mirror && st->mirror(st->mirror_opaque, key, klen, val ? val : "", vlen))
        st->mirror_failed = 1;
}

void engage_state_delete(engage_state_t *st, const void *key, size_t klen) {
    rocksdb_writebatch_delete(st->wb, key, klen);
    if (st->mirror && st->mirror(st->mirror_opaque, key, klen, NULL, 0))
        st->mirror_failed = 1;
}

void engage_state_set_mirror(engage_state_t *st, engage_state_mirror_cb *cb, void *opaque) {
    st->mirror = cb;
    st->mirror_opaque = opaque;
    st->mirror_failed = 0;
}

int engage_state_mirror_failed(engage_state_t *st) {
    int f = st->mirror_failed;
    st->mirror_failed = 0;
    return f;
}

void engage_state_discard(engage_state_t *st) { rocksdb_writebatch_clear(st->wb); }

size_t engage_state_pending(const engage_state_t *st) {
    return (size_t)rocksdb_writebatch_count(st->wb);
}

engage_err_t engage_state_commit(engage_state_t *st, char *errstr, size_t errstr_size) {
    if (rocksdb_writebatch_count(st->wb) == 0)
        return ENGAGE_ERR_OK;
    char *rerr = NULL;
    rocksdb_write(st->db, st->wopts, st->wb, &rerr);
    if (rerr)
        return take_err(rerr, "commit", errstr, errstr_size);
    rocksdb_writebatch_clear(st->wb);
    return ENGAGE_ERR_OK;
}

/* Sums regular file sizes under path (recursively; RocksDB keeps its
 * files flat but may add an archive directory). */
static uint64_t dir_size(const char *path, int depth) {
    DIR *d = opendir(path);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *e;
    char sub[4096];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) >= sizeof(sub))
            continue;
        struct stat sb;
        if (lstat(sub, &sb) != 0)
            continue;
        if (S_ISREG(sb.st_mode))
            total += (uint64_t)sb.st_size;
        else if (S_ISDIR(sb.st_mode) && depth < 4)
            total += dir_size(sub, depth + 1);
    }
    closedir(d);
    return total;
}

uint64_t engage_state_disk_size(engage_state_t *st) { return dir_size(st->path, 0); }

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

engage_err_t engage_state_destroy_dir(const char *path, char *errstr, size_t errstr_size) {
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT)
            return ENGAGE_ERR_OK;
        return engage_seterr(ENGAGE_ERR_IO, errstr, errstr_size, "stat %s: %s", path,
                             strerror(errno));
    }
    if (S_ISDIR(sb.st_mode)) {
        rocksdb_options_t *o = rocksdb_options_create();
        char *rerr = NULL;
        rocksdb_destroy_db(o, path, &rerr);
        rocksdb_options_destroy(o);
        /* Whatever RocksDB could not remove, the walk below removes; its
         * error only matters if files remain. */
        rocksdb_free(rerr);
    }
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        return engage_seterr(ENGAGE_ERR_IO, errstr, errstr_size, "remove %s: %s", path,
                             strerror(errno));
    return ENGAGE_ERR_OK;
}
