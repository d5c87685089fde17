"""Images in: which files are images, decoding and preprocessing, dataset layouts (a folder or
a recipe into a sorted manifest), and the generated evidence dataset."""
