# Item 65: box classifiers with and without partial-lesion background crops, each read at P(lesion)
# shares 0.5 and 0.75, on item 44's and item 58's kept detections (unzipped into /tmp/rep/ first).
set -e
cd /work/main
R="/tmp/rep/cpu-xeon-reference-5/model-fold4 /tmp/rep/cpu-xeon-reference-5/model-breast /tmp/rep/cpu-xeon-ellipse-reference/model-fold4 /tmp/rep/cpu-xeon-ellipse-reference/model-breast"
for s in 0 0.5; do
  .venv/bin/python scripts/classifier_naming.py --data busbra:../shared/data/BUS-BRA --splits fold1 fold2 fold3 \
    --classes 2 3 4 5 --reports $R --seeds 42 43 --blends 0 --epochs 30 --reread --partial-share $s \
    --rescores 0.5 0.75 --out runs/combined-$s
done
