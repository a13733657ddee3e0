#!/usr/bin/env bash
# embed_memory.sh — peak resident memory of `embd embed` as the input grows.
#
# Embeds the first N documents of the Debian corpus for each N in SIZES
# (default "1000 10000") with the disk cache off and with a cold disk cache
# (--cache DIR), output .npy to /dev/null, and prints a Markdown table: docs,
# input MiB, cache mode, peak RSS (GNU time's %M), seconds, docs/s. `embd
# embed` streams its input in chunks (--chunk, default 1024 texts), so the
# peak RSS should not grow with N; the in-memory cache adds at most its
# budget (--cache-mem, 64 MiB).
#
# usage: bench/embed_memory.sh [--model DIR] [--corpus FILE] [--embd BIN]
#        [--sizes "1000 10000"] [--threads N]
set -euo pipefail

EMBD_HOME=${EMBD_HOME:-$HOME/.cache/embd}
model=$EMBD_HOME/models/all-MiniLM-L6-v2
corpus=$EMBD_HOME/corpus/debian.jsonl
embd=build/release/embd
sizes="1000 10000"
threads=0
while [ $# -gt 0 ]; do
	case $1 in
	--model) model=$2; shift ;;
	--corpus) corpus=$2; shift ;;
	--embd) embd=$2; shift ;;
	--sizes) sizes=$2; shift ;;
	--threads) threads=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
	*) echo "embd: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[ -x "$embd" ] || { echo "embd: no embd binary at $embd (--embd)" >&2; exit 1; }
[ -f "$corpus" ] || { echo "embd: no corpus at $corpus (--corpus)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "embd: needs GNU time (/usr/bin/time, Debian package time)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| docs | input MiB | cache | peak RSS MiB | seconds | docs/s |"
echo "| ---: | ---: | --- | ---: | ---: | ---: |"
for n in $sizes; do
	head -n "$n" "$corpus" >"$tmp/in.jsonl"
	mib=$(awk -v b="$(stat -c %s "$tmp/in.jsonl")" 'BEGIN{printf "%.1f", b/1048576}')
	for mode in off disk; do
		cache=off
		[ "$mode" = disk ] && { rm -rf "$tmp/cache"; cache=$tmp/cache; }
		/usr/bin/time -f "%M %e" -o "$tmp/time" "$embd" embed -m "$model" -i "$tmp/in.jsonl" \
			-o /dev/null --format npy --cache "$cache" --threads "$threads" -q
		read -r kb sec <"$tmp/time"
		awk -v n="$n" -v mib="$mib" -v c="$mode" -v kb="$kb" -v s="$sec" \
			'BEGIN{printf "| %d | %s | %s | %.0f | %.1f | %.1f |\n", n, mib, c, kb/1024, s, n/s}'
	done
done
