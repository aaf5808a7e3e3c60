#!/bin/sh
# Run one atheris fuzz target for a while:  fuzz/run.sh TARGET SECONDS [extra libFuzzer flags]
#
# TARGET is the name of fuzz/targets/fuzz_TARGET.py (e.g. "protocol"). New corpus entries
# go to a scratch directory (libFuzzer writes into the FIRST directory it is given), the
# checked-in seeds in fuzz/corpus/TARGET are read second and never modified. Crash
# reproducers go to a fresh temp directory, printed at the end.
# Exit: libFuzzer's status (0 = no crash); 2 = usage error / unknown target;
#       3 = atheris is not installed in the venv.
set -eu

usage() {
    echo "usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags...]" >&2
    echo "targets:" >&2
    for f in "$ROOT"/fuzz/targets/fuzz_*.py; do
        n=${f##*/fuzz_}
        echo "  ${n%.py}" >&2
    done
    exit 2
}

ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
[ "$#" -ge 2 ] || usage
TARGET=$1
SECONDS_TO_RUN=$2
shift 2

case $TARGET in
    '' | *[!a-z0-9_]*) echo "fuzz/run.sh: invalid target name: $TARGET" >&2; usage ;;
esac
case $SECONDS_TO_RUN in
    '' | *[!0-9]*) echo "fuzz/run.sh: SECONDS must be a whole number, got: $SECONDS_TO_RUN" >&2; exit 2 ;;
esac
SCRIPT=$ROOT/fuzz/targets/fuzz_$TARGET.py
if [ ! -f "$SCRIPT" ]; then
    echo "fuzz/run.sh: unknown target: $TARGET (no fuzz/targets/fuzz_$TARGET.py)" >&2
    usage
fi

PYTHON=${KEDGE_FUZZ_PYTHON:-$ROOT/.venv/bin/python}
if [ ! -x "$PYTHON" ]; then
    echo "fuzz/run.sh: no Python at $PYTHON (create the venv, or set KEDGE_FUZZ_PYTHON)" >&2
    exit 3
fi
if ! "$PYTHON" -c 'import atheris' >/dev/null 2>&1; then
    echo "fuzz/run.sh: atheris is not installed in $PYTHON" >&2
    echo "  install it with: $PYTHON -m pip install atheris" >&2
    exit 3
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kedge-fuzz-$TARGET.XXXXXX")
mkdir -p "$WORK/corpus" "$WORK/crashes"
set -- -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048 -timeout=25 \
    -artifact_prefix="$WORK/crashes/" "$@"
DICT=$ROOT/fuzz/dictionaries/$TARGET.dict
if [ -f "$DICT" ]; then
    set -- -dict="$DICT" "$@"
fi
SEEDS=$ROOT/fuzz/corpus/$TARGET
[ -d "$SEEDS" ] || SEEDS=
echo "fuzz/run.sh: $TARGET for ${SECONDS_TO_RUN}s; new corpus -> $WORK/corpus, crashes -> $WORK/crashes/" >&2

status=0
# shellcheck disable=SC2086 # SEEDS is empty or one path without spaces-sensitive globbing
"$PYTHON" "$SCRIPT" "$@" "$WORK/corpus" ${SEEDS:+"$SEEDS"} || status=$?

found=$(find "$WORK/crashes" -type f | wc -l | tr -d ' ')
if [ "$found" -gt 0 ]; then
    echo "fuzz/run.sh: $found reproducer(s) in $WORK/crashes/:" >&2
    find "$WORK/crashes" -type f >&2
    echo "fuzz/run.sh: fix the parser, then keep each under fuzz/regressions/$TARGET/" >&2
else
    echo "fuzz/run.sh: no crash; reproducers would be in $WORK/crashes/" >&2
fi
exit "$status"
