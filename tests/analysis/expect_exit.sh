#!/bin/sh
# expect_exit.sh STATUS COMMAND...: passes when COMMAND exits with STATUS, printing its stderr.
expected=$1
shift
"$@"
status=$?
if [ "$status" -ne "$expected" ]; then
  echo "exit status $status, expected $expected" >&2
  exit 1
fi
