#!/bin/bash
# The systemd user units pass `systemd-analyze verify --user` without a single warning, with
# ExecStart pointing at the binary just built. Usage: systemd_units_test.sh TWINBOX_BINARY SOURCE_DIR
set -euo pipefail
binary=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -m 700 "$work/runtime" "$work/units"
# Documentation=man:twinbox(1) is checked with man(1): the page as it will be installed.
mkdir -p "$work/man/man1"
cp "$source_dir/docs/twinbox.1" "$work/man/man1/"
for unit in twinbox.service twinbox@.service; do
  sed "s|@TWINBOX_EXECUTABLE@|$binary|" "$source_dir/dist/systemd/$unit.in" >"$work/units/$unit"
done
grep -q -- '--watch' "$work/units/twinbox.service"
grep -q -- '--config=%i' "$work/units/twinbox@.service"
# A template is verified through an instance of it.
if ! out=$(MANPATH=$work/man XDG_RUNTIME_DIR=$work/runtime systemd-analyze verify --user \
  "$work/units/twinbox.service" "$work/units/twinbox@work.service" 2>&1) || [[ -n $out ]]; then
  echo "FAIL: systemd-analyze verify:" >&2
  echo "$out" >&2
  exit 1
fi
echo "systemd units verified"
