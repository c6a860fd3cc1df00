"""CLIPER offline job: catalog data, multi-view CLIP features, backbones, training and export."""
