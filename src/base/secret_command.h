// Commands that print a secret: password-command and token-command.
//
// The command runs through /bin/sh -c with stdin inherited (an agent or pinentry can prompt);
// the first line of its standard output is the secret, its standard error is collected. Errors
// name the command by its label, never by its text (the text may itself hold a secret, as in
// `echo hunter2`), and never quote its output; they give the exit status or signal and the end
// of what it wrote on standard error, with registered secrets scrubbed as in every log line. A
// command that has not finished within the timeout is sent SIGTERM, then SIGKILL.
//
// Blocking: meant for the moments a login needs a secret, not for a hot path.
#pragma once

#include <chrono>
#include <string>

#include "base/error.h"

namespace twinbox {

struct SecretCommand {
  std::string label;    // "remote: password-command", the name used in errors
  std::string command;  // shell command line
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  Errc failure = Errc::config;  // the code of every error
};

// The secret, registered with Log::add_secret before this returns. Standard error of a
// successful command is logged at debug level.
Result<std::string> run_secret_command(const SecretCommand& spec);

}  // namespace twinbox
