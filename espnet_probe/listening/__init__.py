"""Human speaker triplet (ABX) listening test on the per-layer reconstructions.

A rater hears reference A (speaker s1), reference B (speaker s2) and X, another utterance of s1
or s2, all vocoded from the same layer of the same probe, and answers whether X is A's or B's
speaker. The error rate per (model, training, set, layer) says how much speaker identity a
person can still hear in that layer.

- ``triplets``: draw the seeded test from the probe experiments;
- ``store``: the SQLite database (stimuli, trials, raters, issued trials, answers);
- ``app``: the Flask web app raters use;
- ``analysis``: human error rates with rater x triplet bootstrap 95 % intervals as ``scores.csv`` rows.
"""
