#!/bin/sh
# Install bids_mdd into a virtual environment at the versions of requirements.lock.
# Used by the Dockerfile and singularity.def alike.
#   install-python-packages.sh SOURCE_DIR VENV TORCH_VARIANT [VERSION]
# TORCH_VARIANT: cpu, or a CUDA build of download.pytorch.org (e.g. cu128).
# VERSION: when not empty, the build fails unless bids_mdd's own version equals it.
# With wheels in wheels/ next to this script, everything comes from there and nothing is
# downloaded (tools/container-test fills it with `pip wheel -r requirements.lock`).
set -eu
src=$1 venv=$2 variant=$3 version=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
lock=$here/requirements.lock
torch=$(grep -E '^torch==' "$lock")

python3 -m venv "$venv"
pip="$venv/bin/pip"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if ls "$here"/wheels/*.whl >/dev/null 2>&1; then
    echo "bids_mdd: installing offline from $here/wheels"
    if ! ls "$here"/wheels/torch-*+"$variant"-*.whl >/dev/null 2>&1; then
        echo "bids_mdd: $here/wheels holds no torch wheel of the '$variant' build" >&2
        exit 1
    fi
    "$pip" install --no-index --find-links "$here/wheels" -c "$lock" "$torch" "$src"
else
    # torch first, from the index of the chosen build: PyPI's default would pull CUDA libraries.
    "$pip" install --index-url "https://download.pytorch.org/whl/$variant" "$torch"
    "$pip" install -c "$lock" "$src"
fi
installed=$("$venv/bin/python" -c 'import bids_mdd; print(bids_mdd.__version__)')
if [ -n "$version" ] && [ "$version" != "$installed" ]; then
    echo "bids_mdd: VERSION=$version, but bids_mdd/_version.py says $installed" >&2
    exit 1
fi
echo "bids_mdd $installed installed in $venv"
