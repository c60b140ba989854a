#include "base/log.h"

#include <gtest/gtest.h>

namespace twinbox {
namespace {

TEST(Log, ScrubsEveryRegisteredSecret) {
  auto& log = Log::instance();
  log.add_secret("hunter2");
  log.add_secret("AGJvYgBodW50ZXIy");  // base64 of "\0bob\0hunter2"
  EXPECT_EQ(log.scrub("C: a LOGIN bob hunter2 / AUTHENTICATE PLAIN AGJvYgBodW50ZXIy hunter2"),
            "C: a LOGIN bob <redacted> / AUTHENTICATE PLAIN <redacted> <redacted>");
}

}  // namespace
}  // namespace twinbox
