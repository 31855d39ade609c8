#!/bin/sh
# Put every template bids_mdd reads into TEMPLATEFLOW_HOME, so that the image runs offline.
# Used by the Dockerfile and singularity.def alike.
#   install-templates.sh VENV TEMPLATEFLOW_HOME
# With a templateflow folder next to this script (tools/container-test copies one there), its
# files are copied; otherwise templateflow downloads them.
set -eu
venv=$1 home=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$home"
if ls -d "$here"/templateflow/tpl-* >/dev/null 2>&1; then
    echo "bids_mdd: templates from $here/templateflow"
    cp -R "$here"/templateflow/tpl-* "$home"/
fi
# Fetches what is missing (online), then checks that every file is there.
TEMPLATEFLOW_HOME=$home TEMPLATEFLOW_AUTOUPDATE=0 "$venv/bin/python" -c \
    "from bids_mdd.spaces.templates import required_templates; print(*required_templates(), sep='\n')"
chmod -R a+rX "$home"
