#!/usr/bin/env bash
# Complete the model repository the container image serves.
#   scripts/docker/export-models.sh MODELS_DIR imagenet|none|skip
# MODELS_DIR already holds a copy of the repository's models/ (digits, sentiment, votes). The
# second argument (the image's RESNET50 build argument) decides about ResNet50, too large to
# keep in git:
#   imagenet  download the ImageNet weights and export them (needs the network)
#   none      export random weights: a quick image for load tests; /api/v1/images refuses to
#             answer from them unless the server runs with MODELSERVE_ALLOW_RANDOM_WEIGHTS=1
#   skip      no resnet50 at all
# Then it lists the repository (`modelserve models`, which fails on an empty one).
# `modelserve` is the one on PATH unless $MODELSERVE names another.
# Run by the Dockerfile's models stage and by scripts/check-docker.sh (skip).
set -euo pipefail

usage="usage: $0 MODELS_DIR imagenet|none|skip"
models=${1:?$usage}
resnet50=${2:?$usage}
modelserve=${MODELSERVE:-modelserve}

if [[ ! -d $models ]]; then
    echo "error: $models is not a folder" >&2
    exit 2
fi
case $resnet50 in
    imagenet | none)
        echo "exporting resnet50 (weights: $resnet50) into $models"
        "$modelserve" train resnet50 --weights "$resnet50" --output "$models" --keep-versions 1
        ;;
    skip)
        if [[ -e $models/resnet50 ]]; then
            echo "error: resnet50 is to be left out, but $models/resnet50 exists" >&2
            exit 1
        fi
        echo "resnet50: left out (skip)"
        ;;
    *)
        echo "error: unknown resnet50 mode '$resnet50'; $usage" >&2
        exit 2
        ;;
esac

"$modelserve" models --model-base-path "$models"
