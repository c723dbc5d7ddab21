# Shared set-up of the benchmark scripts (sourced; expects `here`, the repository root):
# builds the `bench` example and the read-bandwidth probe (scripts/read_bandwidth.c, with
# $CC, default cc), and defines
#   bench                  the `bench` example's path
#   threads                $THREADS, default the CPU count
#   read_bandwidth MB REPS [huge]  the probe's line for a buffer of MB megabytes on $threads threads
#                          (huge: on transparent huge pages)
threads="${THREADS:-$(nproc)}"
bench="$here/target/release/examples/bench"
(cd "$here" && cargo build --release --example bench >&2)
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
"${CC:-cc}" -O3 -march=native -fopenmp "$here/scripts/read_bandwidth.c" -o "$probe_dir/read_bandwidth"
read_bandwidth() { OMP_NUM_THREADS="$threads" "$probe_dir/read_bandwidth" "$@"; }
