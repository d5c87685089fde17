"""Comparing the explanations of two runs over the same images: per image (rank correlation
and top-pixel overlap of two maps), per class (mean maps, their difference and a sign-flip
permutation test, all as running sums), per strategy (SpRAy clusters matched by their
members), and what differs between the two runs' configs. Library code: no CLI, no stage."""
