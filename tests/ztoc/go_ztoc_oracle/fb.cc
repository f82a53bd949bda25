// A C face of the FlatBuffers C++ builder (Debian libflatbuffers-dev) for go_ztoc_oracle: the Go
// FlatBuffers runtime that upstream links is not packaged by Debian, and the C++ builder lays out the
// same calls the same way (vtables deduplicated, defaults omitted, back-to-front with the same alignment).
#include "fb.h"

#include <flatbuffers/flatbuffers.h>

#include <vector>

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

static FlatBufferBuilder *B(void *b) { return static_cast<FlatBufferBuilder *>(b); }
static flatbuffers::voffset_t slot(int id) { return static_cast<flatbuffers::voffset_t>(4 + 2 * id); }

void *fb_new(void) { return new FlatBufferBuilder(1024); }
void fb_free(void *b) { delete B(b); }
uint32_t fb_string(void *b, const char *s, size_t n) { return B(b)->CreateString(s, n).o; }
uint32_t fb_bytes(void *b, const uint8_t *p, size_t n) { return B(b)->CreateVector(p, n).o; }
uint32_t fb_offsets(void *b, const uint32_t *offs, size_t n) {
    std::vector<Offset<void>> v;
    for (size_t i = 0; i < n; i++) v.push_back(Offset<void>(offs[i]));
    return B(b)->CreateVector(v.data(), v.size()).o;
}
uint32_t fb_start(void *b) { return B(b)->StartTable(); }
void fb_add_offset(void *b, int id, uint32_t off) { B(b)->AddOffset(slot(id), Offset<void>(off)); }
void fb_add_i64(void *b, int id, int64_t v) { B(b)->AddElement<int64_t>(slot(id), v, 0); }
void fb_add_i32(void *b, int id, int32_t v) { B(b)->AddElement<int32_t>(slot(id), v, 0); }
void fb_add_u32(void *b, int id, uint32_t v) { B(b)->AddElement<uint32_t>(slot(id), v, 0); }
void fb_add_i8(void *b, int id, int8_t v, int8_t def) { B(b)->AddElement<int8_t>(slot(id), v, def); }
uint32_t fb_end(void *b, uint32_t start) { return B(b)->EndTable(start); }
void fb_finish(void *b, uint32_t root) { B(b)->Finish(Offset<void>(root)); }
const uint8_t *fb_data(void *b, size_t *n) {
    *n = B(b)->GetSize();
    return B(b)->GetBufferPointer();
}
