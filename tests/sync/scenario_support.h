// Helpers shared by the end-to-end scenario files: the "run, then check convergence" assertion,
// snapshot lookups, and a pair of servers shared by the tests of one suite.
#pragma once

#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "sync/sync_harness.h"

namespace twinbox::sync_tests {

// One twinbox run, then the oracle: exit status 0, both servers hold the same mailboxes,
// subscriptions and messages with the same flags, and no message is there twice.
inline testing::AssertionResult synced(const SyncPair& pair,
                                       const std::vector<std::string>& args = {}) {
  RunResult run = pair.run(args);
  if (!run.ok()) return testing::AssertionFailure() << run.describe();
  PerSide<Snapshot> s = pair.snapshots();
  for (auto result :
       {same_content(s[Side::local], s[Side::remote]), no_duplicates(s[Side::local], "local"),
        no_duplicates(s[Side::remote], "remote")}) {
    if (!result) return result << "\nafter the run " << run.describe();
  }
  return testing::AssertionSuccess();
}

// The ids of a mailbox's messages, in UID order.
inline std::vector<std::string> ids_in(const Snapshot& s, std::string_view mailbox) {
  std::vector<std::string> ids;
  if (const MailboxState* box = s.mailbox(mailbox)) {
    for (const auto& m : box->messages) ids.push_back(m.id);
  }
  return ids;
}

// Flags of the single message `id` in `mailbox` ("missing" / "2 copies" otherwise).
inline std::string flags_of(const Snapshot& s, std::string_view mailbox, std::string_view id) {
  const MailboxState* box = s.mailbox(mailbox);
  if (box == nullptr) return fmt::format("no mailbox {}", mailbox);
  auto found = box->find(id);
  if (found.size() != 1) return fmt::format("{} copies", found.size());
  return found.front()->flags_text();
}

// What a first sync of two servers with no message in common leaves on both: every mailbox,
// message (with its flags and INTERNALDATE) and subscription of either.
inline Snapshot merged(const Snapshot& a, const Snapshot& b) {
  Snapshot out = a;
  for (const auto& [name, box] : b.mailboxes) {
    auto& messages = out.mailboxes[name].messages;
    messages.insert(messages.end(), box.messages.begin(), box.messages.end());
  }
  out.subscriptions.insert(b.subscriptions.begin(), b.subscriptions.end());
  return out;
}

// Both sides hold exactly `expected`'s content.
inline testing::AssertionResult both_hold(const SyncPair& pair, const Snapshot& expected) {
  PerSide<Snapshot> s = pair.snapshots();
  for (Side side : kSides) {
    if (auto result = same_content(expected, s[side], "expected", side_name(side)); !result) {
      return result;
    }
  }
  return testing::AssertionSuccess();
}

// A file's whole contents ("" if it cannot be read).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The source tree's root (tests/servers/... live there).
inline std::string source_dir() {
  const std::string lab = dovecot::DovecotLab::lab_script();  // ROOT/tests/dovecot/lab
  return lab.substr(0, lab.size() - std::string("/tests/dovecot/lab").size());
}

// `twinbox --watch ...` in a thread until stop() sends SIGTERM; stop() returns the run.
class Watching {
 public:
  Watching(const SyncPair& pair, std::vector<std::string> args,
           std::chrono::milliseconds timeout = std::chrono::seconds(120))
      : thread_([this, &pair, args = std::move(args), timeout] {
          result_ = pair.run_killed_after(KillAt::when_set(stop_, SIGTERM), args, timeout);
        }) {}
  ~Watching() {
    if (thread_.joinable()) stop();
  }
  Watching(const Watching&) = delete;
  Watching& operator=(const Watching&) = delete;
  const RunResult& stop() {
    stop_ = true;
    thread_.join();
    return result_;
  }

 private:
  std::atomic<bool> stop_{false};
  RunResult result_;
  std::thread thread_;
};

// Whether message `id` shows up in `mailbox` on `side` within `limit` (polled with doveadm).
inline bool arrives_within(const SyncPair& pair, Side side, const std::string& mailbox,
                           const std::string& id, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (pair.snapshot(side).at(mailbox).count(id) == 1) return true;
  }
  return false;
}

// Appends test message `name` #n to `mailbox` on `side`, then waits up to `limit` for it to show
// on the other side (a watching run's reaction time).
inline bool delivered_within(const SyncPair& pair, Side side, const std::string& mailbox,
                             const std::string& name, int n, std::chrono::milliseconds limit) {
  pair.append(side, mailbox, test_message(name, n));
  return arrives_within(pair, other(side), mailbox, test_message_id(name, n), limit);
}

// A SyncPair shared by the tests of a suite when the binary runs them in one process. ctest runs
// every test in its own process, so there each test starts its own pair. A test that fails drops
// the pair, and the next test starts from a fresh one instead of inheriting a broken state.
template <class Suite>
class SharedPairTest : public ::testing::Test {
 protected:
  static std::unique_ptr<SyncPair>& shared() {
    static std::unique_ptr<SyncPair> pair;
    return pair;
  }
  static void TearDownTestSuite() { shared().reset(); }
  // Returns true when the pair was just created (the suite's baseline must be built).
  bool ensure_pair(const PairOptions& options = {}) {
    if (shared()) return false;
    shared() = std::make_unique<SyncPair>(options);
    return true;
  }
  void TearDown() override {
    if (HasFailure()) shared().reset();
  }
  SyncPair& pair() { return *shared(); }
};

}  // namespace twinbox::sync_tests
