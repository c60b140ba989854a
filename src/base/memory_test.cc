#include "base/memory.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

namespace twinbox {
namespace {

TEST(FreeMemoryReturner, TrimsOncePerIntervalOfTraffic) {
  FreeMemoryReturner returner(100);
  EXPECT_FALSE(returner.after(60));
  EXPECT_TRUE(returner.after(60));  // 120 since the start
  EXPECT_FALSE(returner.after(30));
  EXPECT_FALSE(returner.after(69));
  EXPECT_TRUE(returner.after(1));  // exactly 100 since the last
}

// Resident pages of this process (/proc/self/statm, second field).
[[maybe_unused]] long resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

// What the trim is for: 16 MiB freed below a live allocation stays resident until it is handed
// back (malloc only gives back free memory at the top of its heap by itself).
TEST(ReturnFreeMemory, FreedMemoryBelowALiveAllocationLeavesTheProcess) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator keeps freed memory in quarantine";
#else
  if (!return_free_memory()) GTEST_SKIP() << "not glibc";
  constexpr std::size_t kChunk = 4000, kChunks = 4096;  // below any mmap threshold
  std::vector<char*> chunks;
  for (std::size_t i = 0; i < kChunks; ++i) {
    char* chunk = static_cast<char*>(std::malloc(kChunk));
    ASSERT_NE(chunk, nullptr);
    std::memset(chunk, static_cast<int>(i), kChunk);
    chunks.push_back(chunk);
  }
  char* pin = static_cast<char*>(std::malloc(kChunk));  // keeps the heap's top in use
  ASSERT_NE(pin, nullptr);
  std::memset(pin, 1, kChunk);
  for (char* chunk : chunks) std::free(chunk);
  const long before = resident_bytes();
  EXPECT_TRUE(return_free_memory());
  const long after = resident_bytes();
  std::free(pin);
  EXPECT_GT(before - after, 8l << 20) << "resident before " << before << ", after " << after;
#endif
}

}  // namespace
}  // namespace twinbox
