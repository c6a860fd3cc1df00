"""Data layer of the offline job: catalogs, images, caption corpora, splits, the synthetic world."""
