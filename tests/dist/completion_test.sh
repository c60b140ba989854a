#!/bin/bash
# The bash and zsh completions offer exactly the options `twinbox --help` lists, and bash's
# completes option values. Usage: completion_test.sh TWINBOX_BINARY SOURCE_DIR
set -euo pipefail
binary=$1
source_dir=$2
bash_file=$source_dir/dist/completion/twinbox.bash
zsh_file=$source_dir/dist/completion/_twinbox
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# The CLI definition, as CLI11 prints it: "  -j,--jobs N:INT ..." under "Options:".
from_help=$("$binary" --help | sed -n '/^Options:/,/^$/p' |
  grep -oE '^ +(-[a-zA-Z],)?--[a-z][a-z-]*' | tr ',' '\n' | tr -d ' ' | sort -u)
[[ $(wc -l <<<"$from_help") -ge 15 ]] || fail "too few options read from --help: $from_help"

# bash: what completing "-" offers.
offered=$(bash -c 'source "$1"; COMP_WORDS=(twinbox -); COMP_CWORD=1; _twinbox
  printf "%s\n" "${COMPREPLY[@]}"' _ "$bash_file" | sort -u)
if [[ $offered != "$from_help" ]]; then
  fail "bash completion and --help differ:"$'\n'"$(diff <(echo "$offered") <(echo "$from_help"))"
fi

complete_bash() {  # complete_bash WORD... : COMPREPLY for the last word, one per line
  bash -c 'source "$1"; shift; COMP_WORDS=(twinbox "$@"); COMP_CWORD=$#; _twinbox
    printf "%s\n" "${COMPREPLY[@]}"' _ "$bash_file" "$@"
}
expect_completion() {  # expect_completion EXPECTED WORD...
  local expected=$1
  shift
  local got
  got=$(complete_bash "$@" | sort | tr '\n' ' ')
  [[ $got == "$expected " ]] || fail "completing '$*': expected '$expected', got '$got'"
}
expect_completion "database local remote" --target ""
expect_completion "local,remote" --target local,re
expect_completion "local" --target = lo  # how bash splits --target=lo by default
expect_completion "database local remote" --target =
expect_completion "--target=local" --target=lo  # a COMP_WORDBREAKS without '='
expect_completion "--watch=" --wat
expect_completion "--dry-run" --dr
expect_completion "1 16" --jobs 1
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
mkdir -p "$home/twinbox"
touch "$home/twinbox/personal" "$home/twinbox/work"
got=$(XDG_CONFIG_HOME=$home complete_bash --config w | tr '\n' ' ')
[[ $got == *work* ]] || fail "--config does not offer names in \$XDG_CONFIG_HOME/twinbox: '$got'"

# zsh: every option of --help is declared, and nothing else.
declared=$(sed -n '/^_arguments/,/^ *.\*:mailbox/p' "$zsh_file" | sed -E 's/\[[^]]*\]//g; s/:.*//' |
  grep -oE -- '--?[a-z][a-z-]*' | grep -vxE -- '-s|-S' | sort -u)
if [[ $declared != "$from_help" ]]; then
  fail "zsh completion and --help differ:"$'\n'"$(diff <(echo "$declared") <(echo "$from_help"))"
fi
if command -v zsh >/dev/null; then
  zsh -n "$zsh_file" || fail "zsh cannot parse $zsh_file"
  # Load it for real through compinit: a definition error shows up here.
  out=$(ZDOTDIR=$home zsh -f -c "fpath=('$source_dir/dist/completion' \$fpath); autoload -U compinit;
    compinit -u -d '$home/zcompdump'; print -r -- \${_comps[twinbox]}" 2>&1)
  [[ $out == _twinbox ]] || fail "zsh did not register _twinbox for twinbox: $out"
else
  fail "zsh is not installed (scripts/install-deps installs it)"
fi

((failures == 0)) || exit 1
echo "completion: $(wc -l <<<"$from_help") options, bash and zsh agree with --help"
