#!/usr/bin/env bash
# profile.sh — where `embd embed` spends its time, by perf sampling.
#
# Records `embd embed` of the first N Debian descriptions (default 1000)
# with perf (DWARF call graphs, 200 Hz, on --threads 1 by default so that
# OpenMP waits do not blur the split) and prints: the share of samples per
# shared object, the hottest symbols (self), and the inclusive share of the
# backend's phases (linear._omp_fn.0 = the four matrix products of a layer
# with their bias/GELU/residual+LayerNorm epilogue, attention._omp_fn.0,
# embed_tokens, pool) and of the tokenizer (tok_*). Samples whose stack perf
# could not unwind (OpenBLAS kernels without frame info, a few %) count in
# the self table only. BENCHMARKS.md records the result and how it was read.
#
# usage: bench/profile.sh [--model DIR] [--docs N] [--threads N] [--embd BIN]
# Needs perf (Debian: linux-perf) and kernel.perf_event_paranoid <= 2.
set -euo pipefail

EMBD_HOME=${EMBD_HOME:-$HOME/.cache/embd}
model=$EMBD_HOME/models/all-MiniLM-L6-v2
corpus=$EMBD_HOME/corpus/debian.jsonl
embd=build/release/embd
docs=1000
threads=1
while [ $# -gt 0 ]; do
	case $1 in
	--model) model=$2; shift ;;
	--docs) docs=$2; shift ;;
	--threads) threads=$2; shift ;;
	--embd) embd=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "embd: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done
command -v perf >/dev/null || { echo "embd: needs perf (apt-get install linux-perf)" >&2; exit 1; }
[ -x "$embd" ] || { echo "embd: no embd binary at $embd (--embd)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -n "$docs" "$corpus" >"$tmp/in.jsonl"
perf record -q -F 200 --call-graph dwarf,8192 -o "$tmp/perf.data" "$embd" embed -m "$model" \
	-i "$tmp/in.jsonl" -o /dev/null --format npy --cache off -q --threads "$threads" 2>/dev/null
echo "## samples per object (self)"
perf report -i "$tmp/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -6
echo "## hottest symbols (self)"
perf report -i "$tmp/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep '%' | head -15
echo "## phases (inclusive)"
perf report -i "$tmp/perf.data" --children --sort sym --stdio -g none 2>/dev/null |
	grep -E '(linear|attention|embed_tokens|pool)\._omp_fn|cpu_embed|tok_|embd_tokenize|sgemm_(tn|nn)$' | head -20
