# bash completion for twinbox(1). The option list is checked against `twinbox --help` by
# tests/dist/completion_test.sh, so a new option cannot be forgotten here.
_twinbox() {
  local cur prev
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD - 1]}
  local options='-h --help --config --target --watch --notify -j --jobs -q --quiet --debug
    --repair --delete --rename --dry-run --probe --stats-json --import-interimap --version'
  local config_dir=${XDG_CONFIG_HOME:-$HOME/.config}/twinbox

  # --option=value: bash splits it into "--option", "=", "value" when COMP_WORDBREAKS holds
  # '=' (the default); otherwise it is one word, and the replies keep the "--option=" prefix.
  local prefix=
  if [[ $cur == = ]]; then
    cur=
  elif [[ $prev == = && COMP_CWORD -ge 2 ]]; then
    prev=${COMP_WORDS[COMP_CWORD - 2]}
  elif [[ $cur == --*=* ]]; then
    prev=${cur%%=*}
    prefix=$prev=
    cur=${cur#*=}
  fi
  case $prev in
    --config)
      # A relative name is looked up in $XDG_CONFIG_HOME/twinbox.
      local IFS=$'\n'
      COMPREPLY=($(compgen -P "$prefix" -f -- "$cur"))
      if [[ $cur != /* && -d $config_dir ]]; then
        COMPREPLY+=($(cd "$config_dir" && compgen -P "$prefix" -f -- "$cur"))
      fi
      return
      ;;
    --import-interimap)
      local IFS=$'\n'
      COMPREPLY=($(compgen -P "$prefix" -f -- "$cur"))
      return
      ;;
    --stats-json)
      local IFS=$'\n'
      COMPREPLY=($(compgen -P "$prefix" -f -- "$cur") "$prefix-")
      return
      ;;
    --target)
      # Comma-separated: complete the last element.
      local done_part=$prefix
      [[ $cur == *,* ]] && done_part+=${cur%,*},
      COMPREPLY=($(compgen -P "$done_part" -W 'local remote database' -- "${cur##*,}"))
      return
      ;;
    -j | --jobs)
      COMPREPLY=($(compgen -P "$prefix" -W '1 2 4 8 16' -- "$cur"))
      return
      ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$options" -- "$cur"))
    # Options that take a value attached with '=' get no space after them.
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == @(--watch|--config|--target|--stats-json|--import-interimap) ]]; then
      compopt -o nospace 2>/dev/null
      COMPREPLY[0]+='='
    fi
  fi
  # Mailbox names are the servers' to know: nothing is offered for them.
}
complete -F _twinbox twinbox
