#!/usr/bin/env bash
# The venv tests/test_lerobot_peer.py loads exports with: the real lerobot 0.4.4 and what
# its LeRobotDataset(..., video_backend="pyav") imports; and lerobot-doctor 0.2.0, the dataset
# checker tests/test_lerobot_doctor.py runs on an export (it reads the files with pyarrow and
# PyAV, without lerobot; its only dependency beyond lerobot's is rich). Default path
# .venv/lerobot (inside the ignored .venv); ROBOLAKE_LEROBOT_VENV overrides it, PYTHON the
# interpreter.
#
# lerobot 0.4.4 pins torch<2.11 and torchvision<0.26, and the only such torch builds
# reachable here are PyPI's CUDA ones (4.2 GB with their nvidia-* wheels). So the venv
# has this repo's CPU torch 2.13.0 (the local wheel `make venv` installs), lerobot and
# torchvision 0.25.0 without their pins (--no-deps), and lerobot's dataset dependencies.
# torchvision 0.25 is the last with the VideoReader that LeRobot's "pyav" backend decodes
# through (pure Python over PyAV). PyPI's build of it cannot load its CUDA C ops on a CPU
# torch, which dataset loading never calls, but at import it registers fake kernels for
# them, which torch 2.13 refuses for ops that are absent: the script empties that one
# module, torchvision/_meta_registrations.py.
#
# Every other package is pinned by tests/peers/lerobot_constraints.txt (a pip freeze).
#
# Idempotent: a marker in the venv lists what was installed; a venv with the same marker
# is kept. Prints one line and exits 0 even when it cannot build (offline, say): the test
# then skips and says why.
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${ROBOLAKE_LEROBOT_VENV:-$root/.venv/lerobot}
python=${PYTHON:-python3.11}
marker=$venv/robolake-lerobot.txt
constraints=$root/tests/peers/lerobot_constraints.txt
log=$venv.log
dependencies=(torch==2.13.0 pillow "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" "accelerate>=1.10,<2"
              "av>=15,<16" "packaging>=24.2,<26" lerobot-doctor==0.2.0)
unpinned=(lerobot==0.4.4 torchvision==0.25.0)
expected=$(printf '%s\n' "${dependencies[@]}" "${unpinned[@]}" "torchvision/_meta_registrations.py emptied"; cat "$constraints")

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$expected" ]; then
    echo "lerobot venv: $venv is ready (lerobot 0.4.4, lerobot-doctor 0.2.0)"
    exit 0
fi

build() {
    rm -rf "$venv" &&
    "$python" -m venv "$venv" &&
    "$venv/bin/pip" install --retries 1 -c "$constraints" "${dependencies[@]}" &&
    "$venv/bin/pip" install --retries 1 --no-deps "${unpinned[@]}" &&
    site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") &&
    echo "# emptied by tests/peers/lerobot_venv.sh: fake kernels for C ops this CPU torch cannot load" \
        > "$site/torchvision/_meta_registrations.py" &&
    "$venv/bin/python" -c "from lerobot.datasets.lerobot_dataset import LeRobotDataset" &&
    "$venv/bin/lerobot-doctor" --version &&
    echo "$expected" > "$marker"
}

started=$(date +%s)
mkdir -p "$(dirname "$venv")"
if build > "$log" 2>&1; then
    echo "lerobot venv: built $venv in $(( $(date +%s) - started )) s ($(du -sh "$venv" | cut -f1))"
else
    rm -rf "$venv"
    echo "lerobot venv: not built (see $log); tests/test_lerobot_peer.py and test_lerobot_doctor.py will skip"
fi
exit 0
