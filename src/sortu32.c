/* sortu32.c - sorting 32-bit ordinals; see sortu32.h.
 * A persist sorts tens of thousands of dirty users; qsort() cost more than
 * the rest of take_dirty and serialization together. */
#include "sortu32.h"

#include <string.h>

void engage_sort_u32(uint32_t *v, uint32_t *tmp, size_t n) {
    if (n < 32) { /* insertion sort */
        for (size_t i = 1; i < n; i++) {
            uint32_t x = v[i];
            size_t j = i;
            for (; j > 0 && v[j - 1] > x; j--)
                v[j] = v[j - 1];
            v[j] = x;
        }
        return;
    }
    uint32_t any = 0, all = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        any |= v[i];
        all &= v[i];
    }
    uint32_t *src = v, *dst = tmp;
    for (int shift = 0; shift < 32; shift += 8) {
        if (!(((any ^ all) >> shift) & 0xff))
            continue;
        size_t pos[256] = {0};
        for (size_t i = 0; i < n; i++)
            pos[(src[i] >> shift) & 0xff]++;
        for (size_t b = 0, sum = 0; b < 256; b++) {
            size_t c = pos[b];
            pos[b] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[pos[(src[i] >> shift) & 0xff]++] = src[i];
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != v)
        memcpy(v, src, n * sizeof(*v));
}
