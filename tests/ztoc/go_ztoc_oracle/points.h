/* Gzip access points for go_ztoc_oracle (see points.c). */
#include <stddef.h>
#include <stdint.h>

#define ZO_WINDOW 32768

struct zo_point {
    int64_t in, out;
    uint8_t bits;
    unsigned char window[ZO_WINDOW];
};

/* 0 and *points (malloc'd, *count entries) on success; a negative zlib code, or -100 for a truncated
   stream, on failure. */
int zo_points(const unsigned char *data, size_t len, int64_t span, struct zo_point **points, int *count);
