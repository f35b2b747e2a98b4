"""How a trained model directory (a starter model, a project's served version) is fine-tuned on
new annotations: one schedule for the backend's training jobs and ``birads simulate``'s rounds
(docs/results.md item 37). Plain numbers, no detectron2: the backend's settings read them.

In augmented epochs (``TrainSettings.augment_factor`` draws per image), so a job grows with a
project's data: 0.75 is the 60 iterations of 2 images that every simulated loop in
docs/results.md ran on 16 images. A first training from scratch or from a checkpoint keeps
``TrainSettings``' full schedule.
"""

EPOCHS = 0.75
BASE_LR = 0.005
