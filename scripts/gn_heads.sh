# Sourced by reference_model.sh and ablation.sh: the detector's GroupNorm heads (GroupNorm in the
# FPN, a box head of four GroupNorm convolutions and one fully connected layer, as
# model/configs/from_scratch.yaml), as `birads train` overrides. They localised BUS-BRA's lesions far
# better than the default heads under the recipe's trunk on two CPU types (docs/results.md, items 10-11).
# shellcheck shell=bash disable=SC2034
gn_heads=(--extra MODEL.FPN.NORM GN MODEL.ROI_BOX_HEAD.NAME FastRCNNConvFCHead MODEL.ROI_BOX_HEAD.NUM_CONV 4
          MODEL.ROI_BOX_HEAD.NUM_FC 1 MODEL.ROI_BOX_HEAD.NORM GN)
