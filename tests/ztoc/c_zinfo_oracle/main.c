/* c_zinfo_oracle: builds gzip checkpoints with upstream soci-snapshotter's own C implementation
   (ztoc/compression/gzip_zinfo.c, compiled in from SOCI_LAB_UPSTREAM_ZINFO_C at test time, not kept here)
   and writes the serialized zinfo blob to stdout.  Usage: oracle LAYER.gz SPAN_SIZE
   Test tooling for soci_lab (tests/ztoc/test_ztoc_upstream_oracles.py). */
#include "gzip_zinfo.h"
#include <stdlib.h>

int main(int argc, char **argv) {
    struct gzip_zinfo *idx = NULL;
    if (argc != 3) return 2;
    int ret = generate_zinfo_from_file(argv[1], atoll(argv[2]), &idx);
    if (ret <= 0) {
        fprintf(stderr, "generate_zinfo_from_file: %d\n", ret);
        return 1;
    }
    unsigned size = get_blob_size(idx);
    void *buf = malloc(size);
    zinfo_to_blob(idx, buf);
    fwrite(buf, 1, size, stdout);
    free(buf);
    free_zinfo(idx);
    return 0;
}
