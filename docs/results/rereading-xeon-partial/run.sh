set -e
cd /work/main
R="/tmp/rep/cpu-xeon-reference-5/model-fold4 /tmp/rep/cpu-xeon-reference-5/model-breast /tmp/rep/cpu-xeon-ellipse-reference/model-fold4 /tmp/rep/cpu-xeon-ellipse-reference/model-breast"
for s in 0 0.5; do
  .venv/bin/python scripts/classifier_naming.py --data busbra:../shared/data/BUS-BRA --splits fold1 fold2 fold3 \
    --classes 2 3 4 5 --reports $R --seeds 42 43 --blends 0 --epochs 30 --reread --partial-share $s \
    --out runs/partial-$s
done
