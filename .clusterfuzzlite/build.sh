#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build for kedge (runs inside the base-builder-python image,
# with $SRC, $OUT and compile_python_fuzzer provided by it).
#
# Every fuzz/targets/fuzz_<name>.py becomes the fuzzer $OUT/fuzz_<name>, with
#   $OUT/fuzz_<name>_seed_corpus.zip   from fuzz/corpus/<name>/ and fuzz/regressions/<name>/
#   $OUT/fuzz_<name>.dict              from fuzz/dictionaries/<name>.dict (if there is one)
# Targets are found by this glob, never listed by hand (tests/unit/test_fuzz_tooling.py
# checks that each has a corpus). Each target's main() calls atheris.instrument_all() and
# atheris.Setup(sys.argv, ...) itself, which is what compile_python_fuzzer's wrapper runs.

cd "$SRC/kedge"
# kedge and the cloud extra (sigstore, in-toto... that fuzz_bundle and the release targets import).
python3 -m pip install --no-cache-dir '.[cloud]'

shopt -s nullglob
targets=(fuzz/targets/fuzz_*.py)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "build.sh: no fuzz targets under fuzz/targets" >&2
    exit 1
fi

for target in "${targets[@]}"; do
    fuzzer=$(basename "$target" .py)   # fuzz_<name>
    name=${fuzzer#fuzz_}
    # PyInstaller cannot see kedge's lazy imports (edgecore keeps its start-up small), so
    # take every kedge submodule and data file into the bundle.
    compile_python_fuzzer "$target" --collect-submodules=kedge --collect-data=kedge

    # A flat archive (libFuzzer reads files, not a tree); regressions get a prefix so a
    # reproducer never collides with a seed of the same name.
    staging=$(mktemp -d)
    for kind in corpus regressions; do
        dir="fuzz/$kind/$name"
        [ -d "$dir" ] || continue
        for f in "$dir"/*; do
            [ -f "$f" ] && cp "$f" "$staging/$kind-$(basename "$f")"
        done
    done
    (cd "$staging" && zip -q "$OUT/${fuzzer}_seed_corpus.zip" ./*)
    rm -rf "$staging"
    if [ -f "fuzz/dictionaries/$name.dict" ]; then
        cp "fuzz/dictionaries/$name.dict" "$OUT/$fuzzer.dict"
    fi
done
