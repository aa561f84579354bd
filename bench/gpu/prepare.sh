#!/usr/bin/env bash
# Prepares what bench/gpu/run.sh carries to a bare GPU machine that reaches no package registry:
#   .gpu/deno.gz            this machine's Deno binary, gzipped
#   .gpu/libvulkan1_*.deb   Debian's Vulkan loader (unpacked there, not installed)
#   node_modules/           the npm packages deno.lock names (deno install)
# Then call the device tool's run with carry [".gpu", "node_modules"] and the command
#   bash bench/gpu/run.sh "$OUT"
# Everything that travels (tracked files + these) must stay within 64 MiB; this script checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu
deno=$(command -v deno) || { echo "prepare.sh: no deno on PATH (.ci/run installs it)" >&2; exit 1; }
gzip -9 -c "$deno" > .gpu/deno.gz.tmp && mv .gpu/deno.gz.tmp .gpu/deno.gz
rm -f .gpu/libvulkan1_*.deb
(cd .gpu && apt-get download libvulkan1 >/dev/null)
deno install >/dev/null
bytes=$(( $(du -cb .gpu node_modules | tail -1 | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
printf 'prepared: %s MiB to carry (limit 64)\n' $(( bytes / 1048576 ))
ls -l .gpu
[ "$bytes" -lt $(( 64 * 1048576 )) ] || { echo "prepare.sh: over the 64 MiB the device tool carries" >&2; exit 1; }
