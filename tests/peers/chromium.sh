#!/bin/sh
# Installs Debian's chromium for tests/test_report_browser.py (headless page checks).
# Idempotent: does nothing when `chromium` is on PATH. Never fails the caller: without
# root or network it prints one line and exits 0 (the browser test then skips).
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u 2>/dev/null)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium.sh: chromium absent and cannot install it (needs root and apt-get); browser tests will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if { apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
     || { apt-get update -qq >/dev/null 2>&1 \
          && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; } \
   && command -v chromium >/dev/null 2>&1; then
    echo "chromium.sh: installed $(chromium --version 2>/dev/null)"
else
    echo "chromium.sh: could not install chromium with apt-get (offline?); browser tests will skip"
fi
exit 0
