#!/usr/bin/env python3
"""implicit 0.7.3's best point of a grid, chosen on valid like `recflow tune` (benchmark only).

  implicit_grid.py --train TRAIN --valid VALID --out RECS.tsv [--threads 2]
      [--factors 128,512] [--regularization 0.01,0.1,1] [--alpha 10,30] [--iterations 15]

Every grid point is fitted on TRAIN (implicit's CG solver, its default) and scored on VALID:
NDCG@20 over every item without the user's training items (the LightGCN protocol). The best
point is refit on TRAIN + VALID and its top-20 per user written as
`user<TAB>item<TAB>score<TAB>rank`, for `shared/tools/lightgcn_metrics.py` to score on test.
Files are whitespace-separated `user item` pairs, plain or gzipped.
"""
import argparse, itertools, os, sys, time
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
import numpy as np
import pandas as pd
import scipy.sparse as sp


def read(path):
    return pd.read_csv(path, sep=r"\s+", header=None, usecols=[0, 1])


def matrix(df, uids, iids):
    u = np.searchsorted(uids, df[0].values)
    i = np.searchsorted(iids, df[1].values)
    m = sp.csr_matrix((np.ones(len(df), np.float32), (u, i)), shape=(len(uids), len(iids)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def fit(ui, factors, reg, alpha, iterations, threads):
    from implicit.cpu.als import AlternatingLeastSquares
    model = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha,
                                    iterations=iterations, num_threads=threads, random_state=1)
    model.fit(ui, show_progress=False)
    return model


def ndcg_at_20(model, ui, held):
    users = np.unique(held.nonzero()[0])
    ids, _ = model.recommend(users, ui[users], N=20, filter_already_liked_items=True)
    disc = 1.0 / np.log2(np.arange(2, 22))
    total = 0.0
    for n, u in enumerate(users):
        truth = set(held.indices[held.indptr[u]:held.indptr[u + 1]])
        gains = np.array([1.0 if j in truth else 0.0 for j in ids[n]])
        ideal = disc[: min(len(truth), 20)].sum()
        total += (gains * disc[: len(gains)]).sum() / ideal
    return total / len(users)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--factors", default="128,512")
    ap.add_argument("--regularization", default="0.01,0.1,1")
    ap.add_argument("--alpha", default="10,30")
    ap.add_argument("--iterations", type=int, default=15)
    a = ap.parse_args()
    tr, va = read(a.train), read(a.valid)
    both = pd.concat([tr, va])
    uids, iids = np.unique(both[0].values), np.unique(both[1].values)
    ui, held = matrix(tr, uids, iids), matrix(va, uids, iids)
    grid = itertools.product([int(x) for x in a.factors.split(",")],
                             [float(x) for x in a.regularization.split(",")],
                             [float(x) for x in a.alpha.split(",")])
    best = None
    for f, r, al in grid:
        t = time.time()
        v = ndcg_at_20(fit(ui, f, r, al, a.iterations, a.threads), ui, held)
        print(f"factors={f} regularization={r} alpha={al}: valid NDCG@20 {v:.5f} ({time.time() - t:.0f}s)",
              file=sys.stderr, flush=True)
        if best is None or v > best[0]:
            best = (v, f, r, al)
    v, f, r, al = best
    print(f"best: factors={f} regularization={r} alpha={al} (valid NDCG@20 {v:.5f}); refit on train + valid",
          file=sys.stderr, flush=True)
    full = matrix(both, uids, iids)
    model = fit(full, f, r, al, a.iterations, a.threads)
    ids, scores = model.recommend(np.arange(len(uids)), full, N=20, filter_already_liked_items=True)
    with open(a.out, "w") as out:
        for u in range(len(uids)):
            for k in range(ids.shape[1]):
                if ids[u, k] >= 0 and np.isfinite(scores[u, k]):
                    out.write(f"{uids[u]}\t{iids[ids[u, k]]}\t{scores[u, k]:.6f}\t{k + 1}\n")


if __name__ == "__main__":
    main()
