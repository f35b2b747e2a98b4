set -e
cd /work/main
R="/tmp/rep/cpu-xeon-reference-5/model-fold4 /tmp/rep/cpu-xeon-reference-5/model-breast /tmp/rep/cpu-xeon-ellipse-reference/model-fold4 /tmp/rep/cpu-xeon-ellipse-reference/model-breast"
.venv/bin/python scripts/classifier_naming.py --data busbra:../shared/data/BUS-BRA --splits fold1 fold2 fold3 \
  --classes 2 3 4 5 --reports $R --seeds 42 43 --blends 0 --epochs 30 --reread --partial-share 0 \
  --rescores 0.5 0.75 1 --out runs/partial-0
