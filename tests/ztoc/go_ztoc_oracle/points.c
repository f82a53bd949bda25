/* Gzip access points for go_ztoc_oracle, written for soci_lab's tests from zlib's documented interface
   (zlib.h: inflate with Z_BLOCK, data_type bits 0-2 = unused bits of the last input byte, 64 = inside the
   last block, 128 = just after a block end or the header) and the zTOC format description in
   docs/formats.md section 2.1: inflate the whole layer, member after member (counters running on); at a
   block boundary that is not after a final block, add a point when no output has been produced yet or
   when more than `span` bytes were produced since the previous point. A point holds the compressed offset,
   the uncompressed offset, the bit count and the 32 KiB of output before it (zeros in front while less was
   produced). */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "points.h"

#define FEED (1u << 16)

static int add_point(struct zo_point **pts, int *n, int *cap, int64_t in, int64_t out, int bits,
                     const unsigned char *ring, unsigned write_pos) {
    if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : 8;
        struct zo_point *p = realloc(*pts, sizeof(struct zo_point) * (size_t)ncap);
        if (!p) return -1;
        *pts = p;
        *cap = ncap;
    }
    struct zo_point *p = &(*pts)[*n];
    p->in = in;
    p->out = out;
    p->bits = (uint8_t)bits;
    /* the ring's oldest byte is at the write position */
    memcpy(p->window, ring + write_pos, ZO_WINDOW - write_pos);
    memcpy(p->window + (ZO_WINDOW - write_pos), ring, write_pos);
    (*n)++;
    return 0;
}

int zo_points(const unsigned char *data, size_t len, int64_t span, struct zo_point **points, int *count) {
    z_stream s;
    unsigned char *ring = calloc(1, ZO_WINDOW);
    struct zo_point *pts = NULL;
    int n = 0, cap = 0, ret, ended = 0;
    int64_t totin = 0, totout = 0, last = 0;
    size_t fed = 0;

    if (!ring) return Z_MEM_ERROR;
    memset(&s, 0, sizeof s);
    ret = inflateInit2(&s, 15 + 32); /* zlib or gzip header, detected */
    if (ret != Z_OK) {
        free(ring);
        return ret;
    }
    s.avail_out = 0;
    for (;;) {
        if (s.avail_in == 0) {
            if (fed == len) break;
            size_t k = len - fed < FEED ? len - fed : FEED;
            s.next_in = (unsigned char *)data + fed;
            s.avail_in = (uInt)k;
            fed += k;
        }
        if (s.avail_out == 0) {
            s.next_out = ring;
            s.avail_out = ZO_WINDOW;
        }
        uInt ai = s.avail_in, ao = s.avail_out;
        ended = 0;
        ret = inflate(&s, Z_BLOCK);
        totin += ai - s.avail_in;
        totout += ao - s.avail_out;
        if (ret == Z_STREAM_END) {
            ended = 1;
            if (s.avail_in == 0 && fed == len) break;
            ret = inflateReset(&s); /* the next member, same header detection */
            if (ret != Z_OK) goto fail;
            continue;
        }
        if (ret != Z_OK) goto fail;
        if ((s.data_type & 128) && !(s.data_type & 64) && (totout == 0 || totout - last > span)) {
            if (add_point(&pts, &n, &cap, totin, totout, s.data_type & 7, ring, ZO_WINDOW - s.avail_out)) {
                ret = Z_MEM_ERROR;
                goto fail;
            }
            last = totout;
        }
    }
    inflateEnd(&s);
    free(ring);
    if (!ended) {
        free(pts);
        return -100;
    }
    *points = pts;
    *count = n;
    return 0;
fail:
    inflateEnd(&s);
    free(ring);
    free(pts);
    return ret < 0 ? ret : Z_DATA_ERROR;
}
