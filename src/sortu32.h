/*
 * sortu32.h - sorting arrays of 32-bit unsigned integers (user ordinals).
 */
#ifndef ENGAGE_SORTU32_H
#define ENGAGE_SORTU32_H

#include <stddef.h>
#include <stdint.h>

/** Sorts v[0..n) ascending, using tmp[0..n) (caller-owned, any content) as
 *  scratch: insertion sort below 32 values, else an LSD radix sort on bytes
 *  that skips the bytes in which all values agree. Returns nothing;
 *  allocates nothing. Used where qsort() dominated (the sessionizer's dirty
 *  users, the day store's pending adds). */
void engage_sort_u32(uint32_t *v, uint32_t *tmp, size_t n);

#endif
