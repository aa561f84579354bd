#!/usr/bin/env bash
# The GPU check on a bare machine: bash bench/gpu/run.sh OUT [--rehearsal]
# Unpacks the Deno binary and the Vulkan loader that bench/gpu/prepare.sh put in .gpu/ (unless
# the machine has its own), finds the NVIDIA Vulkan driver, prints the adapter, then runs
# bench/gpu/check.ts, which writes results.json and results.md (clipkit against PyTorch) to OUT.
# About 8 minutes on a GPU; tests/gpu_check_test.ts rehearses it on the software adapter.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: bash bench/gpu/run.sh OUT [--rehearsal]}
shift
mkdir -p "$out"
work=$(mktemp -d)
if [ -f .gpu/deno.gz ]; then
  gunzip -c .gpu/deno.gz > "$work/deno" && chmod +x "$work/deno" && export PATH="$work:$PATH"
fi
command -v deno >/dev/null || { echo "run.sh: no deno (run bench/gpu/prepare.sh first)" >&2; exit 1; }
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  for f in .gpu/libvulkan1_*.deb; do [ -f "$f" ] && dpkg -x "$f" "$work/vk"; done
  export LD_LIBRARY_PATH="$work/vk/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia*.json /etc/vulkan/icd.d/nvidia*.json >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$icd
fi
# nothing is fetched: the npm packages come from the carried node_modules
export DENO_WEBGPU_BACKEND=vulkan DENO_NO_UPDATE_CHECK=1 DENO_DIR="$work/deno_dir" NO_COLOR=1 CLIPKIT_OFFLINE=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null
  deno --version | head -1
  deno run -A --cached-only --config deno.json pipeline/cli/info.ts
} 2>&1 | tee "$out/info.txt"
deno run -A --cached-only --config deno.json bench/gpu/check.ts --out "$out" "$@" 2>&1 | tee "$out/log.txt"
status=${PIPESTATUS[0]}
rm -rf "$work"
exit "$status"
