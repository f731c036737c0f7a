#!/bin/sh
# with_shared_data.sh FILE COMMAND...: runs COMMAND when FILE (a real run table in ../shared/data beside the
# project's root) exists; otherwise says so and exits 77, which ctest reports as skipped.
if [ ! -f "$1" ]; then
  echo "skipped: $1 is absent (the real run tables live in ../shared/data beside the project's root)"
  exit 77
fi
shift
exec "$@"
