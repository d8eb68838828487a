#!/usr/bin/env bash
# Bounded fuzzing: runs each target for SECONDS (default 60), all targets unless some are named.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). The checked-in
# seeds (fuzz/seeds/<target>) are read only: libFuzzer writes what it finds to the first corpus
# directory, fuzz/corpus/<target> (git-ignored, kept between runs so coverage accumulates), and
# crashes to fuzz/artifacts/<target>; fuzz/dicts/<target>.dict, if any, is its dictionary.
# Prints one `fuzz: <target> ...` line per target with its execs/s; exits non-zero if any crashed.
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Exporters write files: keep them in a directory removed at the end.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cargo +nightly fuzz build
failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    log="$scratch/$t.log"
    status=ok
    dict=()
    if [ -f "fuzz/dicts/$t.dict" ]; then dict=("-dict=fuzz/dicts/$t.dict"); fi
    TMPDIR="$scratch" cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        "${dict[@]}" >"$log" 2>&1 || status=CRASHED
    execs="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)"
    units="$(find "fuzz/corpus/$t" -type f | wc -l)"
    echo "fuzz: $t $status, ${execs:-?} execs/s over ${secs}s, corpus $units inputs"
    if [ "$status" != ok ]; then
        # The panic, where it was, and the input (not cargo-fuzz's byte dump of it).
        grep -E -A1 "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | head -n 6 || true
        grep -E "^\s*(fuzz/artifacts/|cargo fuzz tmin)" "$log" || true
        failed+=("$t")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}; inputs in fuzz/artifacts/<target>/ (see fuzz/README.md)" >&2
    exit 1
fi
