#!/usr/bin/env python3
"""Writes crates/repghost-data/src/imagenet_classes.tsv (synset<TAB>lemmas, in class-index
order) from the data files that ship with timm (`pip install timm`)."""
import os
import timm

info = os.path.join(os.path.dirname(timm.__file__), "data", "_info")
synsets = [l.strip() for l in open(os.path.join(info, "imagenet_synsets.txt")) if l.strip()]
lemma = dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(info, "imagenet_synset_to_lemma.txt")))
assert len(synsets) == 1000
out = os.path.join(os.path.dirname(__file__), "..", "crates", "repghost-data", "src", "imagenet_classes.tsv")
with open(out, "w") as f:
    for s in synsets:
        f.write(f"{s}\t{lemma[s]}\n")
