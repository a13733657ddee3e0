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
# --short CHARS: short documents instead, as plain text lines, for sizes past
# the corpus (64,512 records) in reasonable time: each record gives its title
# and its text cut to CHARS characters as two documents (129,023 in all),
# repeated from the start when N needs more.
#
# usage: bench/embed_memory.sh [--model DIR] [--corpus FILE] [--embd BIN]
#        [--sizes "1000 10000"] [--threads N] [--short CHARS]
set -euo pipefail

EMBD_HOME=${EMBD_HOME:-$HOME/.cache/embd}
model=$EMBD_HOME/models/all-MiniLM-L6-v2
corpus=$EMBD_HOME/corpus/debian.jsonl
embd=build/release/embd
sizes="1000 10000"
threads=0
short=0
fmt=auto
while [ $# -gt 0 ]; do
	case $1 in
	--model) model=$2; shift ;;
	--corpus) corpus=$2; shift ;;
	--embd) embd=$2; shift ;;
	--sizes) sizes=$2; shift ;;
	--threads) threads=$2; shift ;;
	--short) short=$2; shift ;;
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
if [ "$short" -gt 0 ]; then
	fmt=lines
	max=0
	for n in $sizes; do [ "$n" -gt "$max" ] && max=$n; done
	python3 - "$corpus" "$short" "$max" >"$tmp/short.txt" <<'PY'
import json, sys
path, chars, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
docs = []
with open(path, encoding="utf-8") as f:
    for line in f:
        rec = json.loads(line)
        for t in ([rec["title"]] if rec.get("title") else []) + [rec["text"][:chars]]:
            t = " ".join(t.split())
            if t:
                docs.append(t)
for i in range(want):
    print(docs[i % len(docs)])
PY
fi
echo "| docs | input MiB | cache | peak RSS MiB | seconds | docs/s |"
echo "| ---: | ---: | --- | ---: | ---: | ---: |"
for n in $sizes; do
	if [ "$short" -gt 0 ]; then
		head -n "$n" "$tmp/short.txt" >"$tmp/in.jsonl" # plain lines (--input-format lines)
	else
		head -n "$n" "$corpus" >"$tmp/in.jsonl"
	fi
	mib=$(awk -v b="$(stat -c %s "$tmp/in.jsonl")" 'BEGIN{printf "%.1f", b/1048576}')
	for mode in off disk; do
		cache=off
		[ "$mode" = disk ] && { rm -rf "$tmp/cache"; cache=$tmp/cache; }
		/usr/bin/time -f "%M %e" -o "$tmp/time" "$embd" embed -m "$model" -i "$tmp/in.jsonl" --input-format "$fmt" \
			-o /dev/null --format npy --cache "$cache" --threads "$threads" -q
		read -r kb sec <"$tmp/time"
		awk -v n="$n" -v mib="$mib" -v c="$mode" -v kb="$kb" -v s="$sec" \
			'BEGIN{printf "| %d | %s | %s | %.0f | %.1f | %.1f |\n", n, mib, c, kb/1024, s, n/s}'
	done
done
