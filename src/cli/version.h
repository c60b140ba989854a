#pragma once

namespace twinbox::cli {
// From CMake's project(VERSION ...), the one place the version is written.
inline constexpr const char* kVersion = TWINBOX_VERSION;
}  // namespace twinbox::cli
