#!/usr/bin/env bash
# batch_budget.sh — CPU throughput and peak RSS of `embd embed` against the
# token budget per forward pass (--max-batch-tokens), runs interleaved so
# that machine load hits every budget alike; medians.
#
# usage: bench/batch_budget.sh [--docs 2000] [--runs 3] [--budgets "2048 4096 8192 16384"]
#        [--model DIR] [--embd build/release/embd]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
home=${EMBD_HOME:-$HOME/.cache/embd}
docs=2000 runs=3 budgets="2048 4096 8192 16384"
model=$home/models/all-MiniLM-L6-v2 embd=$root/build/release/embd
while [ $# -gt 0 ]; do
	case "$1" in
	--docs) docs=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--budgets) budgets=$2; shift 2 ;;
	--model) model=$2; shift 2 ;;
	--embd) embd=$2; shift 2 ;;
	-h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "embd: batch_budget.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -n "$docs" "$home/corpus/debian.jsonl" >"$tmp/in.jsonl"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$runs"); do
	for b in $budgets; do
		/usr/bin/time -f "%M" -o "$tmp/rss" "$embd" embed -m "$model" -i "$tmp/in.jsonl" \
			-o /dev/null --format npy --cache off --max-batch-tokens "$b" 2>"$tmp/err"
		rate=$(sed -n 's/.* s: \([0-9.]*\) docs\/s.*/\1/p' "$tmp/err")
		echo "$b $rate $(cat "$tmp/rss")" >>"$tmp/results"
		echo "run $r budget $b: $rate docs/s, peak RSS $(($(cat "$tmp/rss") / 1024)) MiB" >&2
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| --max-batch-tokens | docs/s (median of $runs) | peak RSS MiB (median) |"
echo "| --- | --- | --- |"
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for b in $budgets; do
	rate=$(awk -v b="$b" '$1 == b {print $2}' "$tmp/results" | median)
	rss=$(awk -v b="$b" '$1 == b {print $3}' "$tmp/results" | median)
	echo "| $b | $rate | $((rss / 1024)) |"
done
