# Sourced by the scripts that run on a lent GPU machine (device_reference.sh, device_ablation.sh):
# records the machine in $OUT/env.txt, installs the carried wheels (.device/wheels, made HERE by
# scripts/device_pack.py pack) and unpacks the carried datasets to /tmp/data. Sets: python, started,
# elapsed(); exports PYTHONPATH, DATA and BIRADS for the recipe's scripts.
# NO_WHEELS: a dry run on a CPU, where .venv has the packages (PYTHON=.venv/bin/python).
back=${OUT:?the device tool sets OUT, the folder that comes back}
started=$(date +%s)
python=${PYTHON:-python3}
elapsed() { echo $(( $(date +%s) - started )); }
exec > >(tee -a "$back/log.txt") 2>&1
{ nvidia-smi || true; "$python" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, \
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"; nproc; } > "$back/env.txt" 2>&1
[ -n "${NO_WHEELS:-}" ] ||
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
"$python" scripts/device_pack.py unpack .device/data /tmp/data
export DATA=/tmp/data BIRADS="$python -m model.cli"
