# shellcheck shell=bash
# scripts/lib/build.sh — sourced by scripts/test and scripts/demo (not run by
# itself): how each build folder is configured, a CTest stage that fails when
# it runs no test, and the GPU / CUDA compiler detection of the demo.
# tests/scripts/test_build_lib.sh checks these functions.
#
# Messages are one line starting "embd: $embd_prog: ".

: "${embd_prog:=scripts}"
# Test hooks: where a GPU's device node and the CUDA toolkit's nvcc are looked for.
: "${embd_nvidia_dev:=/dev/nvidia0}"
: "${embd_default_nvcc:=/usr/local/cuda/bin/nvcc}"

embd_say() { echo "embd: $embd_prog: $*" >&2; }

# embd_variant_args VARIANT — sets the array embd_args to every CMake setting
# the build VARIANT (release, asan or tsan) relies on, given explicitly, so a
# cache left by another command (-DBUILD_TESTING=OFF, other flags) is
# overridden. scripts/test and scripts/demo configure build/release with the
# same arguments, so either can run first.
embd_variant_args() {
	embd_args=(
		-DPython3_EXECUTABLE="${EMBD_HOME:?EMBD_HOME is not set}/venv/bin/python"
		-DBUILD_TESTING=ON -DEMBD_FUZZ=OFF -DEMBD_NATIVE=OFF
	)
	case "$1" in
	release)
		embd_args+=(-DCMAKE_BUILD_TYPE=Release -DEMBD_SANITIZE=OFF -DEMBD_CUDA=AUTO
			-DCMAKE_C_FLAGS= -DCMAKE_EXE_LINKER_FLAGS= -DCMAKE_SHARED_LINKER_FLAGS=
			-DCMAKE_MODULE_LINKER_FLAGS=)
		;;
	asan)
		# AUTO skips the CUDA plugin in a sanitizer build (src/backend/cuda/cuda.cmake).
		embd_args+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBD_SANITIZE=ON -DEMBD_CUDA=AUTO
			-DCMAKE_C_FLAGS= -DCMAKE_EXE_LINKER_FLAGS= -DCMAKE_SHARED_LINKER_FLAGS=
			-DCMAKE_MODULE_LINKER_FLAGS=)
		;;
	tsan)
		# Only the scheduler's stress test and the pool's test are built: no CUDA
		# plugin, no compiler check.
		embd_args+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBD_SANITIZE=OFF -DEMBD_CUDA=OFF
			"-DCMAKE_C_FLAGS=-fsanitize=thread -fno-omit-frame-pointer"
			-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread
			-DCMAKE_MODULE_LINKER_FLAGS=-fsanitize=thread)
		;;
	*)
		embd_say "unknown build variant '$1' (release, asan or tsan)"
		return 2
		;;
	esac
}

# embd_configure VARIANT SRC DIR — configures DIR from SRC for VARIANT
# (CMake's output only when it fails).
embd_configure() {
	local variant=$1 src=$2 dir=$3 log rc=0
	embd_variant_args "$variant" || return
	log=$(cmake -S "$src" -B "$dir" "${embd_args[@]}" 2>&1) || rc=$?
	if [ "$rc" -ne 0 ]; then
		printf '%s\n' "$log" >&2
		embd_say "configuring $dir ($variant) failed"
		return "$rc"
	fi
}

# embd_has_target DIR TARGET — true when the configured build DIR defines TARGET.
embd_has_target() {
	[ -d "$1/CMakeFiles/$2.dir" ]
}

# embd_ctest DIR WANT [CTEST_ARGS...] — runs CTest in DIR and fails, with a
# one-line reason, when a test fails, when no test was found, or when the
# tests that ran (not skipped) are none (WANT "any") or not exactly WANT.
embd_ctest() {
	local dir=$1 want=$2 log rc=0 total skipped ran
	local - # ctest's status through the pipe to tee
	set -o pipefail
	shift 2
	log=$(mktemp)
	(cd "$dir" && ctest --no-tests=error --output-on-failure "$@") 2>&1 | tee "$log" || rc=$?
	if grep -q 'No tests were found' "$log"; then
		rm -f "$log"
		embd_say "no tests were found in $dir (configured with -DBUILD_TESTING=OFF, or a -R that matches nothing?)"
		return 1
	fi
	total=$(sed -n 's/.*tests passed, [0-9]* tests\{0,1\} failed out of \([0-9]*\).*/\1/p' "$log" | tail -n 1)
	skipped=$(grep -c '(\(Skipped\|Disabled\))$' "$log" || true)
	rm -f "$log"
	if [ "$rc" -ne 0 ]; then
		embd_say "tests failed in $dir (ctest exit status $rc)"
		return 1
	fi
	if [ -z "$total" ]; then
		embd_say "could not read CTest's summary in $dir"
		return 1
	fi
	ran=$((total - skipped))
	if [ "$want" = any ] && [ "$ran" -eq 0 ]; then
		embd_say "no test ran in $dir: all $total skipped (models or corpus missing?)"
		return 1
	fi
	if [ "$want" != any ] && [ "$ran" -ne "$want" ]; then
		embd_say "$ran tests ran in $dir, expected $want ($total found, $skipped skipped)"
		return 1
	fi
}

# embd_gpu_found — true when an NVIDIA GPU is there: `nvidia-smi -L` lists
# one, or its device node exists. Prints what was found (one line).
embd_gpu_found() {
	local out
	if command -v nvidia-smi >/dev/null 2>&1 && out=$(nvidia-smi -L 2>/dev/null) &&
		out=$(grep -m 1 '^GPU [0-9]' <<<"$out"); then
		printf '%s\n' "$out"
		return 0
	fi
	if [ -e "$embd_nvidia_dev" ]; then
		printf '%s\n' "$embd_nvidia_dev"
		return 0
	fi
	return 1
}

# embd_cuda_compiler — prints nvcc's path (on PATH, else the CUDA toolkit's
# default place, where CMake also looks); false when there is none.
embd_cuda_compiler() {
	if command -v nvcc 2>/dev/null; then
		return 0
	fi
	if [ -x "$embd_default_nvcc" ]; then
		printf '%s\n' "$embd_default_nvcc"
		return 0
	fi
	return 1
}

# embd_cuda_plan — decides whether the demo builds the CUDA plugin: sets
# embd_want_cuda (1 or 0) and embd_cuda_note (why, one line).
# shellcheck disable=SC2034 # both are the caller's
embd_cuda_plan() {
	local gpu nvcc
	embd_want_cuda=0
	if ! gpu=$(embd_gpu_found); then
		embd_cuda_note="no GPU found: the CUDA plugin is not built, the CPU runs"
	elif ! nvcc=$(embd_cuda_compiler); then
		embd_cuda_note="a GPU ($gpu) but no CUDA compiler (nvcc on PATH or $embd_default_nvcc): the CPU runs"
	else
		embd_want_cuda=1
		embd_cuda_note="a GPU ($gpu) and $nvcc: building the CUDA plugin too (minutes, the first time)"
	fi
}

# embd_device_line EMBD — what `embd doctor` says --device auto picks (its
# "device auto -> ..." line, without that prefix: "cpu ...: WHY" or
# "cuda:N: NAME (...)"); "unknown" and false when it says nothing.
embd_device_line() {
	local line
	line=$("$1" doctor 2>/dev/null | sed -n 's/^device auto -> //p' | head -n 1) || true
	if [ -z "$line" ]; then
		echo "unknown (embd doctor printed no \"device auto -> ...\" line)"
		return 1
	fi
	printf '%s\n' "$line"
}
