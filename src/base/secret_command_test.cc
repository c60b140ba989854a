#include "base/secret_command.h"

#include <gtest/gtest.h>

#include "base/log.h"

namespace twinbox {
namespace {

using namespace std::chrono_literals;

Result<std::string> run(std::string command, std::chrono::milliseconds timeout = 10s) {
  return run_secret_command({"remote: password-command", std::move(command), timeout});
}

TEST(SecretCommand, FirstLineOnly) {
  auto r = run("printf 'secret\\nignored'");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, "secret");
}

TEST(SecretCommand, CrLfAndNoNewline) {
  EXPECT_EQ(*run("printf 'pw1\\r\\n'"), "pw1");
  EXPECT_EQ(*run("printf 'pw2'"), "pw2");
}

TEST(SecretCommand, KeepsSpacesAndShellSyntaxWorks) {
  EXPECT_EQ(*run("echo ' a b ' | tr a A"), " A b ");
}

TEST(SecretCommand, LongOutputIsDrained) {
  EXPECT_EQ(*run("{ echo long-output-pw; yes; } | head -c 300000"), "long-output-pw");
  // The same on standard error: a chatty command never blocks on a full pipe.
  EXPECT_EQ(*run("yes 'noise' | head -c 300000 >&2; echo quiet-pw"), "quiet-pw");
}

// The label names the command: its text may hold a secret, its output is never quoted.
TEST(SecretCommand, FailureGivesStatusAndStandardErrorNotOutput) {
  auto r = run("echo $((6*7)); echo 'no such entry: mail/imap' >&2; exit 3");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::config);
  EXPECT_EQ(r.error().message,
            "remote: password-command failed with exit status 3; it said: no such entry: "
            "mail/imap");
  auto quiet = run("exit 1");
  ASSERT_FALSE(quiet.ok());
  EXPECT_EQ(quiet.error().message, "remote: password-command failed with exit status 1");
}

TEST(SecretCommand, ErrorCodeIsTheCallers) {
  auto r = run_secret_command({"local: token-command", "exit 2", 10s, Errc::auth});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::auth);
  EXPECT_EQ(r.error().message, "local: token-command failed with exit status 2");
}

TEST(SecretCommand, Signal) {
  auto r = run("kill -9 $$");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "remote: password-command was killed by signal 9");
}

TEST(SecretCommand, EmptyFirstLine) {
  auto r = run("printf '\\nsecond line'");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "remote: password-command printed nothing on its first line");
}

// A hung command is stopped at the timeout, whether it keeps its pipes open or not.
TEST(SecretCommand, HungCommandIsStopped) {
  const auto started = std::chrono::steady_clock::now();
  auto r = run("echo waiting >&2; sleep 30", 300ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(
      r.error().message,
      "remote: password-command did not finish within 0.3 s and was stopped; it said: waiting");
  // SIGTERM ends it; SIGKILL only for one that ignores SIGTERM.
  auto stubborn = run("trap '' TERM; echo pw; exec >&- 2>&-; sleep 30", 300ms);
  ASSERT_FALSE(stubborn.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
}

TEST(SecretCommand, SecretIsRegisteredAndScrubbedFromStandardError) {
  auto r = run("echo 'pw-from-command-1234'; echo 'got pw-from-command-1234' >&2; exit 0");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Log::instance().scrub("login pw-from-command-1234 ok"), "login <redacted> ok");
  // A failing command that echoes a known secret on standard error: scrubbed in the error.
  auto failed = run("echo 'pw-from-command-1234' >&2; exit 4");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().message,
            "remote: password-command failed with exit status 4; it said: <redacted>");
}

}  // namespace
}  // namespace twinbox
