#!/bin/sh
# Plugins reach the core only through the host table (docs/ARCHITECTURE.md):
# no plugin may import a kr_* symbol (that would bind to libkernrun behind the
# ABI check), and each must export kr_plugin_entry.
# usage: plugin_symbols.sh PLUGIN_BUILD_DIR
set -u
dir=$1
n=0 bad=0
for so in $(find "$dir" -name '*.so' | sort); do
    n=$((n + 1))
    imports=$(nm -D --undefined-only "$so" | awk '{print $NF}' | grep '^kr_' || true)
    if [ -n "$imports" ]; then
        echo "FAIL $so imports core symbols: $imports"
        bad=1
    fi
    if ! nm -D --defined-only "$so" | awk '{print $NF}' | grep -qx 'kr_plugin_entry'; then
        echo "FAIL $so does not export kr_plugin_entry"
        bad=1
    fi
done
if [ "$n" -eq 0 ]; then
    echo "FAIL no plugins under $dir"
    exit 1
fi
echo "$n plugins checked"
exit $bad
