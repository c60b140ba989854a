#include "base/memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace twinbox {

bool FreeMemoryReturner::after(std::size_t bytes) {
  since_last_ += bytes;
  if (since_last_ < interval_) return false;
  since_last_ = 0;
  return_free_memory();
  return true;
}

bool return_free_memory() {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
  malloc_trim(0);
  return true;
#else
  return false;
#endif
}

}  // namespace twinbox
