#!/usr/bin/env bash
# Bounded fuzz run of every target: `bash fuzz/run.sh [seconds-per-target] [target...]`.
#
# Installs cargo-fuzz if missing, builds all targets once, then runs each for the given time
# (default 60 s) with its committed seeds copied into its working corpus. Exits 1 if any target
# crashed, after printing the crashing input's path; the other targets still run, so one run
# reports every crash. CI calls `bash fuzz/run.sh 20`; longer runs are the same command with a
# bigger number.
#
# The machine has only a stable toolchain; cargo-fuzz passes nightly-only flags (-Zsanitizer,
# sancov options), and RUSTC_BOOTSTRAP=1 lets stable rustc accept them.
#
# FUZZ_FLAGS adds `cargo fuzz` build options to both the build and the runs (they must match, or
# each run rebuilds), e.g. FUZZ_FLAGS="-s none" for a faster build without AddressSanitizer.
set -euo pipefail

secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1)); then
    echo "usage: bash fuzz/run.sh [seconds-per-target] [target...]" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
root=$PWD
export RUSTC_BOOTSTRAP=1
read -r -a flags <<<"${FUZZ_FLAGS:-}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

dict_of() {
    case $1 in
    token_decode | verify) echo token ;;
    dpop_proof) echo dpop ;;
    *) echo "$1" ;;
    esac
}

echo "==> building ${#targets[@]} targets"
start=$(date +%s)
cargo fuzz build ${flags[@]+"${flags[@]}"}
echo "==> build took $(($(date +%s) - start)) s"

logs=$root/fuzz/artifacts/logs
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    corpus=$root/fuzz/corpus/$t
    mkdir -p "$corpus" "$root/fuzz/artifacts/$t"
    if [[ -d $root/fuzz/seeds/$t ]]; then
        cp -n "$root/fuzz/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    args=(-max_total_time="$secs" -timeout=10 -print_final_stats=1)
    dict=$root/fuzz/dicts/$(dict_of "$t").dict
    [[ -f $dict ]] && args+=(-dict="$dict")
    log=$logs/$t.log
    echo "==> $t for $secs s (log: ${log#"$root"/})"
    rc=0
    cargo fuzz run ${flags[@]+"${flags[@]}"} "$t" "$corpus" -- "${args[@]}" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if ((rc == 0)); then
        summary+=("$t: ok, ${execs:-?} execs in $secs s, corpus $(find "$corpus" -type f | wc -l) inputs")
    else
        # libFuzzer names the input it saved: "Test unit written to <path>".
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        # The panic message and cargo-fuzz's own advice (input, Debug form, reproduce, minimize),
        # without the stack frames; the full log stays in $log.
        sed -n -e '/panicked at/,/^$/p' -e '/^SUMMARY:/p' -e '/^Failing input:/,$p' "$log" |
            grep -v -E -e '^Stack backtrace:' -e '^ *[0-9]+: ' -e '^ *at ' -e '^ *#[0-9]+ 0x' || true
        summary+=("$t: FAILED (exit $rc), crashing input: ${input:-none saved, see ${log#"$root"/}}")
        failed+=("$t")
    fi
done

echo "==> summary"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
    echo "==> crashed: ${failed[*]}; reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <input>" >&2
    exit 1
fi
