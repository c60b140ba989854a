// The two replicas twinbox keeps in sync, and per-side data indexed by them.
//
// Shared by the state database and the sync engine so that propagation is written once for both
// directions, never as a local-to-remote copy and a mirrored remote-to-local copy that could drift
// apart: `PerSide<T>` is a std::array<T, 2> that also accepts a Side as index. The numeric values
// are stored in the state database; never renumber them.
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

namespace twinbox::store {

enum class Side { local = 0, remote = 1 };

inline constexpr std::array<Side, 2> kSides{Side::local, Side::remote};

constexpr std::size_t side_index(Side side) { return static_cast<std::size_t>(side); }
constexpr Side other(Side side) { return side == Side::local ? Side::remote : Side::local; }
// "local" or "remote", as InterIMAP names them in its log lines.
constexpr std::string_view side_name(Side side) { return side == Side::local ? "local" : "remote"; }

// std::array<T, 2> indexed by Side (or by 0/1). An aggregate: PerSide<int> p{1, 2}.
template <class T>
struct PerSide : std::array<T, 2> {
  using std::array<T, 2>::operator[];
  constexpr T& operator[](Side side) { return (*this)[side_index(side)]; }
  constexpr const T& operator[](Side side) const { return (*this)[side_index(side)]; }
};

}  // namespace twinbox::store
