// Memory the C library keeps after it was freed.
//
// glibc's malloc keeps freed chunks in its heap for reuse; only free memory at the very top of
// the heap goes back to the system by itself. A long copy frees and reallocates bodies of every
// size, so the process's resident size drifts well above what it uses (measured on the large
// benchmark corpus: 35.6 MiB resident for a heap that peaked at about 17 MB; see
// docs/bench/memory-large.md). malloc_trim(0) hands the pages of free chunks back wherever they
// are in the heap (madvise), at the price of faulting them in again when reused.
#pragma once

#include <cstddef>

namespace twinbox {

// Paces the trims: one after every `interval` bytes of traffic at most, so their cost stays a
// small fraction of the copying that made the memory free.
class FreeMemoryReturner {
 public:
  explicit FreeMemoryReturner(std::size_t interval) : interval_(interval) {}
  // Counts `bytes` of traffic; once `interval` of it has passed since the last trim, trims
  // (return_free_memory()) and says so.
  bool after(std::size_t bytes);

 private:
  std::size_t interval_;
  std::size_t since_last_ = 0;
};

// Hands the free memory of the C library's heap back to the system now (glibc: malloc_trim).
// Returns false where there is no such call (other C libraries, sanitizers' allocators).
bool return_free_memory();

}  // namespace twinbox
