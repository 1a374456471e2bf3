#!/usr/bin/env bash
# `make bench`: every benchmark of the repository, each printing its figures side by side with
# the tool a user would otherwise use. Each part is a script of its own in bench/.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for part in spec detect server tree agent; do
  script=bench/$part.sh
  [ -f "$script" ] || continue
  echo
  echo "=================== bench/$part.sh"
  bash "$script" || { echo "bench/$part.sh FAILED"; status=1; }
done
exit $status
