#!/usr/bin/env bash
# bench/gemm_libs.sh — the CPU matrix products of the models in libraries
# against embd's own kernel (bench/gemm_libs.c), every configuration, in
# rounds, and the table for BENCHMARKS.md.
#
# Configurations (each a process of build/.../bench_gemm_libs; one that is
# not installed prints a skip line):
#   openblas       Debian's libopenblas.so.0, OPENBLAS_CORETYPE unset (its
#                  own choice of kernels) and =Haswell (the AVX2 kernels)
#   mkl            PyPI mkl (libmkl_rt.so.3 in the bench venv), as is and with
#                  MKL_ENABLE_INSTRUCTIONS=AVX512
#   dnnl-debian    Debian's libdnnl2 (oneDNN 2.6, OpenMP)
#   dnnl-pypi      PyPI onednn (the current release: SYCL + TBB); 1t rows under
#                  `taskset -c 0`
#   dnnl-gomp      PyPI onednn-cpu-gomp 2023.2 (oneDNN 3.2, OpenMP; in its own
#                  venv, its libdnnl.so.3 would clash with onednn's)
#   embd           embd_cpu_gemm with EMBD_CPU_ISA=avx512 and =avx2
# Install the libraries with `scripts/bench-setup --gemm-libs`.
#
# Rounds (--rounds, default 3) run every configuration in turn, the order
# rotating; a cell of the table is the median over rounds of each round's
# median (of --reps reps). Writes bench/results/gemm_libs-DATE.jsonl (every
# line of every process, with round and config added) and prints the
# markdown tables; --report FILE.jsonl prints them again from a file.
#
# usage: bench/gemm_libs.sh [--rounds 3] [--reps 5] [--ms 30] [--threads 2]
#        [--configs a,b] [--tokens 2048,32] [--report FILE.jsonl]
# EMBD_BUILD (default build/release) is the build folder; it is configured
# and bench_gemm_libs built when missing. EMBD_HOME as in scripts/bench-setup.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
EMBD_HOME=${EMBD_HOME:-$HOME/.cache/embd}
build=${EMBD_BUILD:-build/release}
venv=$EMBD_HOME/bench-venv
gomp=$EMBD_HOME/bench/onednn-gomp-venv
rounds=3 reps=5 ms=30 threads=2 tokens=2048,32 report=""
configs="openblas,openblas-haswell,mkl,mkl-avx512,dnnl-debian,dnnl-pypi,dnnl-gomp,embd-avx512,embd-avx2"
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
		exit 0
		;;
	--rounds) rounds=$2 && shift ;;
	--reps) reps=$2 && shift ;;
	--ms) ms=$2 && shift ;;
	--threads) threads=$2 && shift ;;
	--configs) configs=$2 && shift ;;
	--tokens) tokens=$2 && shift ;;
	--report) report=$2 && shift ;;
	*) echo "embd: unknown argument '$1' (see --help)" >&2 && exit 2 ;;
	esac
	shift
done

py=python3
[ -x "$venv/bin/python" ] && py=$venv/bin/python

if [ -z "$report" ]; then
	if [ ! -f "$build/CMakeCache.txt" ]; then
		cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	fi
	nice -n 10 cmake --build "$build" -j2 --target bench_gemm_libs >/dev/null
	bin=$(find "$build" -name bench_gemm_libs -type f -perm -u+x | head -n 1)
	[ -n "$bin" ] || { echo "embd: bench_gemm_libs was not built in $build" >&2; exit 1; }
	mkdir -p bench/results
	report=bench/results/gemm_libs-$(date -u +%Y-%m-%d-%H%M).jsonl
	common=(--threads "$threads" --reps "$reps" --ms "$ms" --tokens "$tokens")
	# One configuration, its lines tagged with the round and its name.
	run() {
		local r=$1 c=$2
		local -a cmd
		case $c in
		openblas) cmd=(env -u OPENBLAS_CORETYPE "$bin" --lib openblas --tag "OPENBLAS_CORETYPE unset") ;;
		openblas-haswell) cmd=(env OPENBLAS_CORETYPE=Haswell "$bin" --lib openblas --tag "OPENBLAS_CORETYPE=Haswell") ;;
		mkl) cmd=(env -u MKL_ENABLE_INSTRUCTIONS "$bin" --lib mkl --path "$venv/lib/libmkl_rt.so.3" --tag "PyPI mkl") ;;
		mkl-avx512) cmd=(env MKL_ENABLE_INSTRUCTIONS=AVX512 "$bin" --lib mkl --path "$venv/lib/libmkl_rt.so.3" --tag "PyPI mkl, MKL_ENABLE_INSTRUCTIONS=AVX512") ;;
		dnnl-debian) cmd=("$bin" --lib dnnl --path /usr/lib/x86_64-linux-gnu/libdnnl.so.2 --tag "Debian libdnnl2") ;;
		dnnl-pypi)
			# Thread count from the affinity: 1t pinned to one core, lib on all.
			env LD_LIBRARY_PATH="$venv/lib" taskset -c 0 "$bin" --lib dnnl --path "$venv/lib/libdnnl.so.3" \
				--tag "PyPI onednn" --modes 1t "${common[@]}" 2>/dev/null | grep '^{' |
				sed "s/^{/{\"round\": $r, \"config\": \"$c\", /"
			cmd=(env LD_LIBRARY_PATH="$venv/lib" "$bin" --lib dnnl --path "$venv/lib/libdnnl.so.3" --tag "PyPI onednn" --modes lib)
			;;
		dnnl-gomp) cmd=("$bin" --lib dnnl --path "$gomp/lib/libdnnl.so.3" --tag "PyPI onednn-cpu-gomp") ;;
		embd-avx512) cmd=(env EMBD_CPU_ISA=avx512 "$bin" --lib embd --tag "EMBD_CPU_ISA=avx512") ;;
		embd-avx2) cmd=(env EMBD_CPU_ISA=avx2 "$bin" --lib embd --tag "EMBD_CPU_ISA=avx2") ;;
		*) echo "embd: unknown configuration $c" >&2 && exit 2 ;;
		esac
		# oneDNN's SYCL build prints its verbose lines on stdout: keep JSON only.
		"${cmd[@]}" "${common[@]}" 2>/dev/null | grep '^{' | sed "s/^{/{\"round\": $r, \"config\": \"$c\", /"
	}
	"$py" - "$threads" >"$report" <<'PY'
import json, os, platform, subprocess, sys, time
flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split()
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
             platform.machine())
want = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16",
        "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
print(json.dumps({"machine": {"cpu": model, "cores": os.cpu_count(),
                              "flags": [f for f in want if f in flags]},
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "threads": int(sys.argv[1]), "load_before": os.getloadavg()}))
PY
	IFS=, read -r -a list <<<"$configs"
	n=${#list[@]}
	for ((r = 1; r <= rounds; r++)); do
		for ((i = 0; i < n; i++)); do
			c=${list[$(((i + r - 1) % n))]}
			echo "gemm_libs: round $r/$rounds $c (load $(cut -d' ' -f1 /proc/loadavg))" >&2
			run "$r" "$c" >>"$report"
		done
	done
	echo "{\"load_after\": [$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)]}" >>"$report"
	echo "gemm_libs: wrote $report" >&2
fi

"$py" - "$report" <<'PY'
import collections, json, statistics, sys

lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
head = next(l for l in lines if "machine" in l)
after = next((l["load_after"] for l in lines if "load_after" in l), None)
rows = [l for l in lines if "gflops" in l]
infos = collections.OrderedDict()
for l in lines:
    for k in ("info", "skip"):
        if k in l and "T=" not in l[k]:
            infos.setdefault((l["config"], k, l[k]), None)
ops = ("qkv", "out", "up", "down")
models = {"minilm": "all-MiniLM-L6-v2 / bge-small (H 384, I 1536)",
          "bge-base": "bge-base (H 768, I 3072)"}

# cell[(config, tag, lib, variant, dtype, mode, T, model, op)] = [per-round medians]
cell = collections.defaultdict(list)
loads = [r["load"] for r in rows]
for r in rows:
    cell[(r["config"], r["tag"], r["lib"], r["variant"], r["dtype"], r["mode"], r["threads"],
          r["T"], r["model"], r["op"], r["K"], r["N"])].append(r["gflops"])
med = {k: statistics.median(v) for k, v in cell.items()}
nrounds = max((len(v) for v in cell.values()), default=0)

def label(cfg, tag, lib, variant, dtype):
    names = {"openblas": "OpenBLAS", "mkl": "MKL", "dnnl": "oneDNN", "embd": "embd"}
    return f"{names.get(lib, lib)} `{variant}` ({tag})"

MODE = {"1t": "1", "lib": "2 (library's threads)", "split": "2 (rows split, 1-thread calls)"}
groups = collections.OrderedDict()
for k in med:
    cfg, tag, lib, variant, dtype, mode, nt, T, model, op, K, N = k
    groups.setdefault((dtype, T, mode == "1t", cfg, tag, lib, variant, mode, nt), {})[(model, op)] = (
        med[k], K, N)

def weighted(cells, model):
    """The rate of the model's four products together: total FLOPs over total time."""
    got = [cells.get((model, op)) for op in ops]
    if not all(got):
        return None
    return sum(k * n for _, k, n in got) / sum(k * n / g for g, k, n in got)

out = []
out.append(f"Generated by `bench/gemm_libs.sh` on {head['date']}: {head['machine']['cpu']}, "
           f"{head['machine']['cores']} cores ({', '.join(head['machine']['flags'])}). "
           f"{nrounds} rounds of every configuration, the order rotating; each cell is the "
           f"median over rounds of a round's median rate (GFLOP/s, 2·T·N·K per call). "
           f"Load average (1-min) at the starts of the measurements: {min(loads):.1f} to "
           f"{max(loads):.1f}" + (f"; after: {after[0]:.1f}." if after else "."))
out.append("")
out.append("Libraries as loaded (one line each):")
out.append("")
for (cfg, k, text) in infos:
    out.append(f"- {cfg}: {k}: {text}")
for dtype in ("fp32", "bf16", "int8"):
    for T in sorted({g[1] for g in groups}, reverse=True):
        for one in (True, False):
            sel = [(g, c) for g, c in groups.items() if g[0] == dtype and g[1] == T and g[2] == one]
            if not sel:
                continue
            cols = [(m, op) for m in models for op in ops + ("all",)]
            best = {}
            for col in cols:
                vals = [(weighted(c, col[0]) if col[1] == "all" else
                         (c.get(col) or (None,))[0]) for _, c in sel]
                vals = [v for v in vals if v]
                best[col] = max(vals) if vals else None
            out.append("")
            out.append(f"**{dtype}, T = {T} tokens, {'1 thread' if one else str(head['threads']) + ' threads'}** "
                       f"(GFLOP/s; bold: the best in the column, * within 5% of it)")
            out.append("")
            out.append("| library (configuration) | threads | " + " | ".join(
                f"{'MiniLM' if m == 'minilm' else 'base'} {op}" for m, op in cols) + " |")
            out.append("| --- | --- |" + " ---: |" * len(cols))
            for g, c in sel:
                dt, _, _, cfg, tag, lib, variant, mode, nt = g
                cells = []
                for col in cols:
                    v = weighted(c, col[0]) if col[1] == "all" else (c.get(col) or (None,))[0]
                    if v is None:
                        cells.append("—")
                    elif best[col] and v >= best[col] * 0.9999:
                        cells.append(f"**{v:.0f}**")
                    elif best[col] and v >= best[col] * 0.95:
                        cells.append(f"{v:.0f}*")
                    else:
                        cells.append(f"{v:.0f}")
                out.append(f"| {label(cfg, tag, lib, variant, dt)} | {MODE[mode]} | "
                           + " | ".join(cells) + " |")
print("\n".join(out))
PY
