"""Constants shared by the input pipeline, the configs and image preprocessing (no imports)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # RGB in [0, 1], as timm's IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)
