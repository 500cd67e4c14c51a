# Sourced by the GPU session scripts (gpu_distill.sh, gpu_students.sh): strict mode, unbuffered
# Python, and the package on PYTHONPATH; on a machine without nibabel / lightning-fabric their
# wheels in .whl/ are installed into /tmp/site first.
set -euo pipefail
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
