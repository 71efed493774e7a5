#!/usr/bin/env bash
# The device machine's side of bench/gpu.py (docs/gpu.md): from the repository root, with .gpu/ carried (prepared
# here by bench/fetch_gpu_wheels.sh), install the carried wheels and lightpref without network, then run the
# benchmark. Extra arguments go to bench/gpu.py. The report lands in $OUT (the device tool's folder that comes back).
set -uo pipefail
cd "$(dirname "$0")/.."
if ! ls .gpu/wheels/*.whl >/dev/null 2>&1; then
    echo ".gpu/wheels is missing: run bash bench/fetch_gpu_wheels.sh here and name .gpu in the call's carry" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl || exit 3
# lightpref itself beside them (its metadata registers the built-in losses); the code is imported from this checkout
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . \
    || echo "note: lightpref was not installed (its metadata gives the loss registry); bench/gpu.py does not need it"
# nothing outside the machine can be reached: never wait on a network call
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
python3 bench/gpu.py --out "${OUT:-runs/gpu}" "$@"
