#!/usr/bin/env python3
"""implicit 0.7.3 at its own defaults, as a user would call it (benchmark only).

  implicit_defaults.py --train TRAIN --out RECS.tsv [--k 10] [--sep TAB|SPACE] [--threads 2]

AlternatingLeastSquares() with every default (factors 100, regularization 0.01, alpha 1.0,
15 iterations, CG) fitted on the user x item matrix of the raw weights (third column, or 1),
duplicates summed; top-k per user without already-liked items written as
`user<TAB>item<TAB>score<TAB>rank` so `recflow eval` scores it like recflow's own recs.
"""
import argparse, os
for _v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_v, None)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
import numpy as np
import pandas as pd
import scipy.sparse as sp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    from implicit.cpu.als import AlternatingLeastSquares
    df = pd.read_csv(a.train, sep=r"\s+", header=None, engine="python" if a.train.endswith(".txt") else "c")
    w = df[2].astype(np.float32).values if df.shape[1] > 2 else np.ones(len(df), np.float32)
    uids, uidx = np.unique(df[0].values, return_inverse=True)
    iids, iidx = np.unique(df[1].values, return_inverse=True)
    ui = sp.csr_matrix((w, (uidx, iidx)), shape=(len(uids), len(iids)))
    ui.sum_duplicates()
    model = AlternatingLeastSquares(num_threads=a.threads, random_state=1)
    model.fit(ui, show_progress=False)
    ids, scores = model.recommend(np.arange(len(uids)), ui, N=a.k, filter_already_liked_items=True)
    with open(a.out, "w") as f:
        for u in range(len(uids)):
            for r in range(ids.shape[1]):
                if ids[u, r] >= 0 and np.isfinite(scores[u, r]):
                    f.write(f"{uids[u]}\t{iids[ids[u, r]]}\t{scores[u, r]:.6f}\t{r + 1}\n")


if __name__ == "__main__":
    main()
