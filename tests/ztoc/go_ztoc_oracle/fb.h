/* A C face of the FlatBuffers C++ builder (Debian libflatbuffers-dev) for go_ztoc_oracle. */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
void *fb_new(void);
void fb_free(void *b);
uint32_t fb_string(void *b, const char *s, size_t n);
uint32_t fb_bytes(void *b, const uint8_t *p, size_t n);
uint32_t fb_offsets(void *b, const uint32_t *offs, size_t n);
uint32_t fb_start(void *b);
void fb_add_offset(void *b, int id, uint32_t off);
void fb_add_i64(void *b, int id, int64_t v);
void fb_add_i32(void *b, int id, int32_t v);
void fb_add_u32(void *b, int id, uint32_t v);
void fb_add_i8(void *b, int id, int8_t v, int8_t def);
uint32_t fb_end(void *b, uint32_t start);
void fb_finish(void *b, uint32_t root);
const uint8_t *fb_data(void *b, size_t *n);
#ifdef __cplusplus
}
#endif
