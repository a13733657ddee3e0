#!/usr/bin/env bash
# tests/scripts/test_build_lib.sh SRC — checks scripts/lib/build.sh, the
# functions scripts/test and scripts/demo share (issue 18, defects 2 and 3):
#
# - embd_ctest: a stage with no test (an empty build folder, a project
#   configured with -DBUILD_TESTING=OFF, a -R that matches nothing) fails
#   with a one-line reason, as does one whose tests all skipped, one that
#   ran another count than expected (the tsan stage's one test), and one
#   with a failing test; a stage whose tests ran passes.
# - embd_configure: embd's own tree configured with -DBUILD_TESTING=OFF
#   first (what scripts/demo used to do to build/release) has its tests
#   after the release configuration; scripts/demo configures build/release
#   exactly as scripts/test does.
# - embd_device_line: the demo says which device --device auto picks, from
#   `embd doctor` (stubs, and the real embd when CTest gives EMBD_BIN).
# - embd_gpu_found / embd_cuda_compiler / embd_cuda_plan: a GPU is one that
#   `nvidia-smi -L` lists or a device node; nvcc is on PATH or in the CUDA
#   toolkit's place; the demo builds the CUDA plugin only with both (stubs).
#
# Seconds: a throwaway CMake project and one configure of embd, no build.
# shellcheck disable=SC2016,SC2031 # literal $ in patterns and code strings; subshells on purpose
set -uo pipefail

src=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
check() { # check WHAT COMMAND... : the command must succeed
	local what=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "FAIL: $what"
	fi
}

# Each call runs in a subshell, with the library sourced fresh, so the
# variables a case sets do not leak into the next.
lib() { (
	embd_prog="test"
	export EMBD_HOME="$tmp/home"
	. "$src/scripts/lib/build.sh"
	"$@"
); }

# expect_fail WHAT MESSAGE FUNCTION ARGS... : FUNCTION fails and says MESSAGE.
expect_fail() {
	local what=$1 msg=$2 out rc=0
	shift 2
	out=$(lib "$@" 2>&1) || rc=$?
	check "$what: exit status $rc, expected non-zero" [ "$rc" -ne 0 ]
	if ! grep -q "^embd: test: .*$msg" <<<"$out"; then
		failed=$((failed + 1))
		printf 'FAIL: %s: no "embd: test: ...%s" line in:\n%s\n' "$what" "$msg" "$out"
	else
		passed=$((passed + 1))
	fi
}

expect_ok() {
	local what=$1 out rc=0
	shift
	out=$(lib "$@" 2>&1) || rc=$?
	if [ "$rc" -ne 0 ]; then
		failed=$((failed + 1))
		printf 'FAIL: %s: exit status %d:\n%s\n' "$what" "$rc" "$out"
	else
		passed=$((passed + 1))
	fi
}

# --- embd_ctest on a throwaway project ------------------------------------
mkdir -p "$tmp/proj" "$tmp/empty" "$tmp/home/venv/bin"
ln -s "$(command -v python3)" "$tmp/home/venv/bin/python"
cat >"$tmp/proj/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.20)
project(tiny NONE)
include(CTest)
if(BUILD_TESTING)
  add_test(NAME ok COMMAND true)
  add_test(NAME skipped COMMAND sh -c "exit 77")
  set_tests_properties(skipped PROPERTIES SKIP_RETURN_CODE 77)
  add_test(NAME bad COMMAND false)
endif()
EOF

expect_fail "an empty build folder" "no tests were found" embd_ctest "$tmp/empty" any
cmake -S "$tmp/proj" -B "$tmp/off" -DBUILD_TESTING=OFF >/dev/null
expect_fail "a project configured with BUILD_TESTING=OFF" "no tests were found" embd_ctest "$tmp/off" any
cmake -S "$tmp/proj" -B "$tmp/on" -DBUILD_TESTING=ON >/dev/null
expect_fail "-R matching nothing" "no tests were found" embd_ctest "$tmp/on" any -R '^nothing$'
expect_fail "every test skipped" "no test ran in .*all 1 skipped" embd_ctest "$tmp/on" any -R '^skipped$'
expect_fail "a failing test" "tests failed in" embd_ctest "$tmp/on" any -R '^bad$'
expect_ok "a passing and a skipped test, any" embd_ctest "$tmp/on" any -R '^(ok|skipped)$'
expect_ok "a passing and a skipped test, exactly 1" embd_ctest "$tmp/on" 1 -R '^(ok|skipped)$'
expect_fail "exactly 1 wanted, the one skipped" "0 tests ran in .*expected 1 (1 found, 1 skipped)" \
	embd_ctest "$tmp/on" 1 -R '^skipped$'
expect_fail "exactly 2 wanted, 1 ran" "1 tests ran in .*expected 2" embd_ctest "$tmp/on" 2 -R '^(ok|skipped)$'
expect_fail "an unknown variant" "unknown build variant" embd_variant_args debug

# --- embd_configure on embd's tree, its cache poisoned first -----------------
poisoned="$tmp/release"
cmake -S "$src" -B "$poisoned" -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$tmp/home/venv/bin/python" \
	>/dev/null 2>&1
check "the poisoned folder has no tests" \
	bash -c "cd '$poisoned' && ! ctest -N 2>/dev/null | grep -q 'Total Tests: [1-9]'"
expect_ok "embd_configure release over the poisoned cache" embd_configure release "$src" "$poisoned"
check "BUILD_TESTING is ON in the cache" grep -q '^BUILD_TESTING:BOOL=ON$' "$poisoned/CMakeCache.txt"
n=$(cd "$poisoned" && ctest -N 2>/dev/null | sed -n 's/^Total Tests: //p')
check "the release folder lists embd's tests (found ${n:-none})" [ "${n:-0}" -gt 10 ]
check "the release folder defines embd_cli" lib embd_has_target "$poisoned" embd_cli
check "no target nonexistent_target" bash -c "! [ -d '$poisoned/CMakeFiles/nonexistent_target.dir' ]"
check "scripts/demo configures build/release as scripts/test does" \
	grep -q '^embd_configure release "$root" "$build"$' "$src/scripts/demo"
check "scripts/test configures every variant with embd_configure" \
	grep -q 'embd_configure "$name" "$root" "$dir"' "$src/scripts/test"
check "scripts/demo has no cmake line of its own" bash -c "! grep -q -- '-DBUILD_TESTING\|cmake -S' '$src/scripts/demo'"

# --- GPU and nvcc detection, with stubs ------------------------------------------
# PATH holds only the stubs and grep, so the machine's own nvidia-smi and nvcc
# are out of sight; the device node and the toolkit's nvcc are pointed away.
mkdir -p "$tmp/tools" "$tmp/gpu" "$tmp/nogpu" "$tmp/nvcc" "$tmp/none"
ln -s "$(command -v grep)" "$tmp/tools/grep"
printf '#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0000)"\n' >"$tmp/gpu/nvidia-smi"
printf '#!/bin/sh\necho "No devices were found"\nexit 6\n' >"$tmp/nogpu/nvidia-smi"
printf '#!/bin/sh\nexit 0\n' >"$tmp/nvcc/nvcc"
: >"$tmp/dev-nvidia0"
printf '#!/bin/sh\nexit 0\n' >"$tmp/toolkit-nvcc"
chmod +x "$tmp/gpu/nvidia-smi" "$tmp/nogpu/nvidia-smi" "$tmp/nvcc/nvcc" "$tmp/toolkit-nvcc"

# detect PATH_DIRS DEV_NODE TOOLKIT_NVCC CODE — runs CODE with the library in that world.
detect() {
	bash -c "PATH='$1:$tmp/tools'; embd_nvidia_dev='$2'; embd_default_nvcc='$3'
		. '$src/scripts/lib/build.sh'; $4"
}
no="$tmp/missing"
out=$(detect "$tmp/none" "$no" "$no" embd_gpu_found) && r=0 || r=$?
check "no nvidia-smi, no device node: no GPU (got '$out')" [ "$r" -ne 0 ]
out=$(detect "$tmp/nogpu" "$no" "$no" embd_gpu_found) && r=0 || r=$?
check "nvidia-smi -L lists no GPU: no GPU (got '$out')" [ "$r" -ne 0 ]
out=$(detect "$tmp/gpu" "$no" "$no" embd_gpu_found) && r=0 || r=$?
[ "$r" -eq 0 ] && [ "$out" = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0000)" ]
check "nvidia-smi -L lists a GPU: found (got '$out')" [ $? -eq 0 ]
out=$(detect "$tmp/none" "$tmp/dev-nvidia0" "$no" embd_gpu_found) && r=0 || r=$?
[ "$r" -eq 0 ] && [ "$out" = "$tmp/dev-nvidia0" ]
check "a device node: found (got '$out')" [ $? -eq 0 ]
out=$(detect "$tmp/none" "$no" "$no" embd_cuda_compiler) && r=0 || r=$?
check "no nvcc anywhere: none (got '$out')" [ "$r" -ne 0 ]
out=$(detect "$tmp/nvcc" "$no" "$no" embd_cuda_compiler) && r=0 || r=$?
[ "$r" -eq 0 ] && [ "$out" = "$tmp/nvcc/nvcc" ]
check "nvcc on PATH (got '$out')" [ $? -eq 0 ]
out=$(detect "$tmp/none" "$no" "$tmp/toolkit-nvcc" embd_cuda_compiler) && r=0 || r=$?
[ "$r" -eq 0 ] && [ "$out" = "$tmp/toolkit-nvcc" ]
check "nvcc in the toolkit's place (got '$out')" [ $? -eq 0 ]

plan='embd_cuda_plan; echo "$embd_want_cuda $embd_cuda_note"'
out=$(detect "$tmp/nvcc" "$no" "$tmp/toolkit-nvcc" "$plan")
[ "${out%% *}" = 0 ] && grep -q "no GPU found" <<<"$out"
check "nvcc but no GPU (this kind of machine): no plugin build (got '$out')" [ $? -eq 0 ]
out=$(detect "$tmp/gpu:$tmp/nvcc" "$no" "$no" "$plan")
[ "${out%% *}" = 1 ] && grep -q "H100" <<<"$out"
check "a GPU and nvcc: the plugin is built (got '$out')" [ $? -eq 0 ]
out=$(detect "$tmp/gpu" "$no" "$no" "$plan")
[ "${out%% *}" = 0 ] && grep -q "no CUDA compiler" <<<"$out"
check "a GPU, no nvcc: no plugin build, says so (got '$out')" [ $? -eq 0 ]
out=$(detect "$tmp/none" "$tmp/dev-nvidia0" "$tmp/toolkit-nvcc" "$plan")
check "a device node and the toolkit's nvcc: the plugin is built (got '$out')" [ "${out%% *}" = 1 ]

# --- the demo's device line, from embd doctor ----------------------------------
for said in "cpu (auto_cpu_no_driver): no NVIDIA driver (libcuda.so.1 not found)" \
	"cuda:0: NVIDIA H100 80GB HBM3 (compute capability 9.0, 80552 MiB free)"; do
	printf '#!/bin/sh\necho "embd 0.1.0"\necho "device auto -> %s"\necho "store search: ..."\n' "$said" \
		>"$tmp/fake-embd"
	chmod +x "$tmp/fake-embd"
	out=$(lib embd_device_line "$tmp/fake-embd")
	check "device line from doctor's '$said' (got '$out')" [ "$out" = "$said" ]
done
printf '#!/bin/sh\necho "embd 0.1.0"\nexit 1\n' >"$tmp/fake-embd"
out=$(lib embd_device_line "$tmp/fake-embd") && r=0 || r=$?
[ "$r" -ne 0 ] && grep -q '^unknown' <<<"$out"
check "no device line: unknown, false (got '$out')" [ $? -eq 0 ]
# The real embd (CTest gives its path): doctor still prints the line the demo reads.
if [ -x "${EMBD_BIN:-}" ]; then
	out=$(unset EMBD_DEVICE; lib embd_device_line "$EMBD_BIN") && r=0 || r=$?
	[ "$r" -eq 0 ] && grep -Eq '^(cpu|cuda:[0-9]+)' <<<"$out"
	check "embd doctor's device line (got '$out')" [ $? -eq 0 ]
else
	echo "note: EMBD_BIN not built; embd doctor's device line not checked"
fi

echo "scripts_build_lib: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
