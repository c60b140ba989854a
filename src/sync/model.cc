#include "sync/model.h"

#include <algorithm>
#include <array>

namespace twinbox::sync {

namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && compare_flags(a, b) == 0;
}

// RFC 9051 §2.3.2; \Recent is dropped before this applies.
constexpr std::array<std::string_view, 5> kSystemFlags = {"\\Answered", "\\Deleted", "\\Draft",
                                                          "\\Flagged", "\\Seen"};

}  // namespace

int compare_flags(std::string_view a, std::string_view b) {
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const char x = lower(a[i]), y = lower(b[i]);
    if (x != y) return static_cast<unsigned char>(x) < static_cast<unsigned char>(y) ? -1 : 1;
  }
  if (a.size() == b.size()) return 0;
  return a.size() < b.size() ? -1 : 1;
}

std::string join_flags(const FlagSet& flags) {
  std::string out;
  for (const auto& flag : flags) {
    if (!out.empty()) out += ' ';
    out += flag;
  }
  return out;
}

FlagSet canonical(std::vector<std::string> flags) {
  std::erase_if(
      flags, [](const std::string& f) { return f.empty() || equal_ignoring_case(f, "\\Recent"); });
  for (auto& f : flags) {
    if (f[0] != '\\') continue;
    for (std::string_view system : kSystemFlags) {
      if (equal_ignoring_case(f, system)) f = system;
    }
  }
  // Ties (one keyword in several spellings) are broken bytewise, so that unique() keeps the same
  // spelling whatever the input order.
  std::sort(flags.begin(), flags.end(), [](const std::string& a, const std::string& b) {
    const int c = compare_flags(a, b);
    return c != 0 ? c < 0 : a < b;
  });
  flags.erase(std::unique(flags.begin(), flags.end(),
                          [](const std::string& a, const std::string& b) {
                            return compare_flags(a, b) == 0;
                          }),
              flags.end());
  return flags;
}

bool has_flag(const FlagSet& set, std::string_view flag) {
  auto it = std::lower_bound(
      set.begin(), set.end(), flag,
      [](const std::string& a, std::string_view b) { return compare_flags(a, b) < 0; });
  return it != set.end() && compare_flags(*it, flag) == 0;
}

bool same_flags(const FlagSet& a, const FlagSet& b) {
  return std::equal(
      a.begin(), a.end(), b.begin(), b.end(),
      [](const std::string& x, const std::string& y) { return compare_flags(x, y) == 0; });
}

}  // namespace twinbox::sync
