#!/usr/bin/env python3
"""Heavy-tailed count data with a planted model (benchmark only, never a test dependency).

  gen_counts.py --out DIR [--users 20000] [--items 5000] [--nnz 400000] [--seed 1]

Writes DIR/train.tsv, DIR/valid.tsv, DIR/test.tsv (`user<TAB>item<TAB>count`, no header):
a planted rank-16 model picks which items a user has (Zipf activity, a softmax over the
user's affinities), and the count of a pair is Pareto-distributed (shape 1.1, like play
counts: most pairs 1-3, a few in the thousands) and grows with the pair's affinity, so
counts carry preference and a confidence that is linear in them is swamped by the tail.
Each user's pairs are split 80/10/10 at random into train/valid/test. Needs numpy.
"""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--nnz", type=int, default=400000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    rank = 16
    xu = rng.normal(size=(a.users, rank)).astype(np.float32)
    yi = rng.normal(size=(a.items, rank)).astype(np.float32)
    pop = rng.normal(size=a.items).astype(np.float32)
    activity = 1.0 / np.arange(1, a.users + 1) ** 0.7
    n_u = np.maximum(2, np.round(activity / activity.sum() * a.nnz)).astype(int)
    n_u = np.minimum(n_u, a.items // 2)
    rng.shuffle(n_u)
    os.makedirs(a.out, exist_ok=True)
    outs = {s: open(os.path.join(a.out, s + ".tsv"), "w") for s in ("train", "valid", "test")}
    for u in range(a.users):
        aff = yi @ xu[u] / np.sqrt(rank) + pop
        p = np.exp(2.0 * (aff - aff.max()))
        p /= p.sum()
        items = rng.choice(a.items, size=n_u[u], replace=False, p=p)
        z = (aff[items] - aff.mean()) / (aff.std() + 1e-9)
        counts = np.ceil(rng.pareto(1.1, size=len(items)) * np.exp(0.7 * z)).astype(int)
        counts = np.clip(counts, 1, 100000)
        split = rng.random(len(items))
        for i, c, s in zip(items, counts, split):
            part = "train" if s < 0.8 else ("valid" if s < 0.9 else "test")
            outs[part].write(f"{u}\t{i}\t{c}\n")
    for f in outs.values():
        f.close()


if __name__ == "__main__":
    main()
